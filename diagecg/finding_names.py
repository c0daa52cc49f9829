"""How questions name findings: synonyms, broader and narrower names, findings the model never learnt,
and spelling slips (torch-free; used by ``diagecg.questions``).

A name in a question is read as one of the catalogue's findings (ECG-QA's attribute names) with a
**scope**:

* ``same``: the finding itself, by its name or a synonym (:data:`SYNONYMS`: ``AF``, ``LBBB``,
  ``inferior MI`` for ``myocardial infarction in inferior leads``...);
* ``broader``: the catalogue finding covers more than was asked (``heart block`` is answered as
  ``conduction disturbance``, ``acute MI`` as ``myocardial infarction``): a "no" answers the
  question, a "yes" does not confirm the narrower finding;
* ``narrower``: the catalogue finding is one kind of what was asked (``ischemia`` is answered as
  ``non-specific ischemic``, ``bradycardia`` as ``sinus bradycardia``): a "yes" answers the
  question, a "no" does not exclude the other kinds.

Broader and narrower readings (:data:`APPROXIMATE`) always carry a note that the answer repeats, so
a specific finding is never answered as its class without saying so. Findings that are more specific
than any in the catalogue (``posterior ischemia``) or that the model never learnt (``right
ventricular hypertrophy``, ``Wolff-Parkinson-White``, ``second degree AV block``:
:data:`UNKNOWN_FINDINGS`) are refused by name, with related findings it does know.

Spelling slips: a word of a finding's name may be misspelt by one edit (two for words of nine letters
or more; a swap of neighbouring letters is one edit) when the name has five letters or more and the
typed word is not itself a word of another finding's name (``anterior`` is never read as
``inferior``, ``left`` never as ``right``); a one-word name needs eight letters or more (``racing``
is not ``pacing``). The name read is shown with the answer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

__all__ = [
    "APPROXIMATE",
    "GAP_WORDS",
    "LOCALISED",
    "NAME_WORDS",
    "SITE_WORDS",
    "STAGE_WORDS",
    "SYNONYMS",
    "UNKNOWN_FINDINGS",
    "FindingForm",
    "FindingTerm",
    "FoundName",
    "NameFinder",
    "Scope",
    "edit_distance",
    "finding_forms",
    "is_spelling_slip",
]

Scope = Literal["same", "broader", "narrower"]
Via = Literal["name", "synonym", "spelling"]

# abbreviations and common names -> ECG-QA attribute name (lower case; matched on word boundaries)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "atrial fibrillation": (
        "af",
        "afib",
        "a-fib",
        "a fib",
        "atrial fib",
        "auricular fibrillation",
        "fibrillation of the atria",
    ),
    "atrial flutter": ("afl", "aflutter", "a-flutter", "flutter", "a flutter"),
    "complete left bundle branch block": (
        "lbbb",
        "clbbb",
        "left bundle branch block",
        "complete lbbb",
        "left bundle-branch block",
        "left bbb",
        "lbb block",
        "left bundle block",
        "left-sided bundle branch block",
        "block of the left bundle",
        "left sided bundle branch block",
    ),
    "complete right bundle branch block": (
        "rbbb",
        "crbbb",
        "right bundle branch block",
        "complete rbbb",
        "right bundle-branch block",
        "right bbb",
        "rbb block",
        "right bundle block",
        "right-sided bundle branch block",
        "block of the right bundle",
        "right sided bundle branch block",
    ),
    "incomplete left bundle branch block": (
        "ilbbb",
        "incomplete lbbb",
        "incomplete left bbb",
        "partial left bundle branch block",
    ),
    "incomplete right bundle branch block": (
        "irbbb",
        "incomplete rbbb",
        "incomplete right bbb",
        "partial right bundle branch block",
    ),
    "first degree av block": (
        "1st degree av block",
        "1st degree avb",
        "first degree avb",
        "1avb",
        "1 avb",
        "first-degree av block",
        "1st-degree av block",
        "first degree heart block",
        "1st degree heart block",
        "first degree atrioventricular block",
        "1st degree atrioventricular block",
        "av block i",
        "avb i",
        "first degree block",
        "av block 1st degree",
        "av block first degree",
        "first-degree heart block",
    ),
    "left ventricular hypertrophy": ("lvh", "left ventricular enlargement", "lv hypertrophy"),
    "left anterior fascicular block": ("lafb", "left anterior hemiblock", "lahb"),
    "left posterior fascicular block": ("lpfb", "left posterior hemiblock", "lphb"),
    "ventricular premature complex": (
        "pvc",
        "vpc",
        "vpb",
        "pvb",
        "premature ventricular contraction",
        "premature ventricular complex",
        "premature ventricular beat",
        "ventricular premature beat",
        "ventricular extrasystole",
        "ventricular ectopic beat",
        "ventricular ectopy",
        "ventricular ectopics",
        "ventricular premature contraction",
    ),
    "atrial premature complex": (
        "pac",
        "apc",
        "apb",
        "premature atrial contraction",
        "premature atrial complex",
        "premature atrial beat",
        "atrial premature beat",
        "atrial extrasystole",
        "supraventricular premature beat",
        "svpb",
        "atrial ectopic beat",
        "atrial ectopics",
        "atrial premature contraction",
    ),
    "sinus bradycardia": ("sinus brady",),
    "sinus tachycardia": ("sinus tach", "sinus tachy"),
    "supraventricular tachycardia": ("svt",),
    "sinus rhythm": (
        "nsr",
        "normal sinus rhythm",
        "sinus",
        "regular sinus rhythm",
        "rhythm is sinus",
        "rhythm sinus",
    ),
    "sinus arrhythmia": ("sarrh", "respiratory sinus arrhythmia"),
    "myocardial infarction": (
        "mi",
        "infarction",
        "infarct",
        "heart attack",
        "myocardial infarct",
        "myocardial infarctions",
    ),
    "st/t change": (
        "st-t change",
        "st t change",
        "st/t abnormality",
        "st-t abnormality",
        "stt change",
        "st/t changes",
        "st-t changes",
        "st-t wave change",
        "st-t wave changes",
        "st and t wave change",
        "st and t wave changes",
        "repolarisation abnormality",
        "repolarization abnormality",
    ),
    "conduction disturbance": (
        "conduction abnormality",
        "conduction defect",
        "conduction disorder",
        "conduction delay",
        "conduction problem",
    ),
    "hypertrophy": ("chamber enlargement",),
    "left atrial overload/enlargement": (
        "left atrial enlargement",
        "left atrial overload",
        "lae",
        "lao",
        "left atrial abnormality",
        "p mitrale",
        "left atrial hypertrophy",
        "enlarged left atrium",
    ),
    "right atrial overload/enlargement": (
        "right atrial enlargement",
        "right atrial overload",
        "rae",
        "rao",
        "right atrial abnormality",
        "p pulmonale",
        "right atrial hypertrophy",
        "enlarged right atrium",
    ),
    "long qt-interval": (
        "long qt",
        "long qt interval",
        "prolonged qt",
        "prolonged qt interval",
        "long qtc",
        "prolonged qtc",
        "qt prolongation",
        "qt prolonged",
        "qtc prolonged",
        "qt long",
        "qt is long",
        "qt interval long",
        "qt interval is long",
        "qt is prolonged",
        "qt interval prolonged",
        "qt interval is prolonged",
        "qtc long",
        "qtc is long",
        "qtc is prolonged",
        "qtc interval prolonged",
        "qtc interval is prolonged",
        "qt too long",
        "qt is too long",
        "lengthened qt",
        "qtc prolongation",
    ),
    "prolonged pr interval": (
        "long pr",
        "long pr interval",
        "prolonged pr",
        "pr prolongation",
        "pr long",
        "pr is long",
        "pr is prolonged",
        "pr interval is prolonged",
        "pr interval prolonged",
        "pr interval is long",
        "pr prolonged",
    ),
    "normal functioning artificial pacemaker": (
        "pacemaker",
        "paced rhythm",
        "pacing",
        "paced",
        "pacemaker rhythm",
        "artificial pacemaker",
    ),
    "non-specific intraventricular conduction disturbance (block)": (
        "ivcd",
        "intraventricular conduction delay",
        "nonspecific intraventricular block",
        "intraventricular conduction disturbance",
        "intraventricular block",
        "nonspecific intraventricular conduction delay",
        "non-specific intraventricular conduction delay",
    ),
    "low qrs voltages in the frontal and horizontal leads": (
        "low qrs voltage",
        "low voltage",
        "low voltages",
        "low qrs voltages",
        "low-voltage qrs",
        "low voltage qrs",
    ),
    "high qrs voltage": ("high voltage", "high qrs voltages", "high voltages", "tall qrs"),
    "inverted t-waves": (
        "inverted t waves",
        "t wave inversion",
        "t-wave inversion",
        "inverted t",
        "negative t waves",
        "negative t-waves",
        "t wave inversions",
        "t-wave inversions",
        "t waves inverted",
        "inverted t wave",
        "twi",
    ),
    "q waves present": (
        "q waves",
        "pathological q waves",
        "q-waves",
        "pathologic q waves",
        "abnormal q waves",
        "q wave",
        "significant q waves",
    ),
    "digitalis effect": ("digoxin effect", "digitalis", "digoxin", "digitalis-effect"),
    "non-specific st depression": (
        "st depression",
        "st segment depression",
        "depressed st",
        "st-segment depression",
        "st depressed",
        "st segment depressed",
        "nonspecific st depression",
        "st-depression",
    ),
    "non-specific st elevation": (
        "st elevation",
        "st segment elevation",
        "elevated st",
        "st-segment elevation",
        "st elevated",
        "st segment elevated",
        "nonspecific st elevation",
        "st-elevation",
    ),
    "non-specific st changes": (
        "st changes",
        "st change",
        "st segment changes",
        "nonspecific st changes",
        "st abnormality",
        "st segment abnormality",
    ),
    "non-specific t-wave changes": (
        "t wave changes",
        "t-wave changes",
        "nonspecific t wave changes",
        "t wave change",
        "nonspecific t-wave changes",
    ),
    "t-wave abnormality": (
        "t wave abnormality",
        "abnormal t waves",
        "t wave abnormalities",
        "abnormal t wave",
    ),
    "low amplitude t-wave": (
        "low amplitude t waves",
        "flat t waves",
        "flattened t waves",
        "low t waves",
        "t wave flattening",
        "flat t wave",
    ),
    "abnormal qrs": ("qrs abnormality", "abnormal qrs complex", "abnormal qrs complexes"),
    "non-diagnostic t abnormalities": (
        "nondiagnostic t abnormalities",
        "non-diagnostic t abnormality",
        "non diagnostic t abnormalities",
    ),
    "non-specific ischemic": (
        "nonspecific ischemia",
        "non-specific ischemia",
        "nonspecific ischemic",
        "non specific ischemia",
    ),
    "voltage criteria (qrs) for left ventricular hypertrophy": (
        "voltage criteria for lvh",
        "lvh voltage criteria",
        "voltage lvh",
        "lvh by voltage",
        "voltage criteria for left ventricular hypertrophy",
        "lvh voltage",
    ),
    "bigeminal pattern (unknown origin, supraventricular, or ventricular)": (
        "bigeminy",
        "bigeminal pattern",
        "bigeminal",
        "bigeminal rhythm",
        "bigeminal pattern (unknown origin, sv or ventricular)",
    ),
}

# localised findings: the catalogue's "X in <site> leads" and the ways a question names them
_SITES = (
    "anterior",
    "anterolateral",
    "anteroseptal",
    "inferior",
    "inferolateral",
    "inferoposterior",
    "inferoposterolateral",
    "lateral",
    "posterior",
)
_LOCALISED_FORMS = {
    "myocardial infarction in {} leads": (
        "{} mi",
        "{} myocardial infarction",
        "{} infarction",
        "{} infarct",
        "{} wall mi",
        "{} wall myocardial infarction",
        "{} wall infarction",
        "{} myocardial infarct",
        "mi in {} leads",
        "infarction in {} leads",
        "{} heart attack",
        "{} wall infarct",
        "{}-wall mi",
    ),
    "ischemic in {} leads": (
        "{} ischemia",
        "{} ischemic",
        "ischemia in {} leads",
        "{} wall ischemia",
        "{} ischemic changes",
        "{} myocardial ischemia",
    ),
    "subendocardial injury in {} leads": (
        "{} subendocardial injury",
        "{} injury",
        "injury in {} leads",
        "{} wall injury",
    ),
}
LOCALISED: dict[str, tuple[str, ...]] = {
    pattern.format(site): tuple(f.format(site) for f in forms)
    for pattern, forms in _LOCALISED_FORMS.items()
    for site in _SITES
}

# general or approximate names -> (catalogue finding, scope, what the answer does not say)
_CD_NOTE = (
    "conduction disturbance covers bundle branch, fascicular and AV blocks; of the AV blocks "
    "the model knows only first degree AV block by name"
)
_BBB_NOTE = (
    "conduction disturbance covers every bundle branch block and more; name the side "
    "(left: LBBB, right: RBBB) to ask about one"
)
_STAGE_NOTE = "the model does not tell an acute infarction from an old one"
APPROXIMATE: dict[str, tuple[str, Scope, str]] = {
    "heart block": ("conduction disturbance", "broader", _CD_NOTE),
    "av block": ("conduction disturbance", "broader", _CD_NOTE),
    "avb": ("conduction disturbance", "broader", _CD_NOTE),
    "a-v block": ("conduction disturbance", "broader", _CD_NOTE),
    "atrioventricular block": ("conduction disturbance", "broader", _CD_NOTE),
    "bundle branch block": ("conduction disturbance", "broader", _BBB_NOTE),
    "bundle-branch block": ("conduction disturbance", "broader", _BBB_NOTE),
    "bbb": ("conduction disturbance", "broader", _BBB_NOTE),
    "fascicular block": (
        "conduction disturbance",
        "broader",
        "conduction disturbance covers every fascicular block and more; name it (LAFB, "
        "LPFB) to ask about one",
    ),
    "hemiblock": (
        "conduction disturbance",
        "broader",
        "conduction disturbance covers every fascicular block and more; name it (LAFB, LPFB)",
    ),
    "ventricular hypertrophy": (
        "hypertrophy",
        "broader",
        "hypertrophy also covers atrial enlargement; left ventricular hypertrophy is asked by name",
    ),
    "acute mi": ("myocardial infarction", "broader", _STAGE_NOTE),
    "acute myocardial infarction": ("myocardial infarction", "broader", _STAGE_NOTE),
    "old mi": ("myocardial infarction", "broader", _STAGE_NOTE),
    "old myocardial infarction": ("myocardial infarction", "broader", _STAGE_NOTE),
    "old infarct": ("myocardial infarction", "broader", _STAGE_NOTE),
    "old infarction": ("myocardial infarction", "broader", _STAGE_NOTE),
    "prior mi": ("myocardial infarction", "broader", _STAGE_NOTE),
    "previous mi": ("myocardial infarction", "broader", _STAGE_NOTE),
    "recent mi": ("myocardial infarction", "broader", _STAGE_NOTE),
    "stemi": ("myocardial infarction", "broader", _STAGE_NOTE + " (nor one with ST elevation)"),
    "nstemi": ("myocardial infarction", "broader", _STAGE_NOTE + " (nor one without ST elevation)"),
    "psvt": (
        "supraventricular tachycardia",
        "broader",
        "the model was not trained on paroxysmal SVT apart from SVT",
    ),
    "paroxysmal supraventricular tachycardia": (
        "supraventricular tachycardia",
        "broader",
        "the model was not trained on paroxysmal SVT apart from SVT",
    ),
    "atrial tachycardia": (
        "supraventricular tachycardia",
        "broader",
        "supraventricular tachycardia covers atrial tachycardia and more",
    ),
    "bradycardia": (
        "sinus bradycardia",
        "narrower",
        "sinus bradycardia is the only bradycardia the model "
        "knows; a 'no' does not exclude other slow rhythms",
    ),
    "bradycardic": (
        "sinus bradycardia",
        "narrower",
        "sinus bradycardia is the only bradycardia the model knows",
    ),
    "slow heart rate": (
        "sinus bradycardia",
        "narrower",
        "answered as sinus bradycardia, the only slow rhythm the model knows",
    ),
    "heart rate is slow": (
        "sinus bradycardia",
        "narrower",
        "answered as sinus bradycardia, the only slow rhythm the model knows",
    ),
    "heart rate slow": ("sinus bradycardia", "narrower", "answered as sinus bradycardia"),
    "low heart rate": ("sinus bradycardia", "narrower", "answered as sinus bradycardia"),
    "tachycardia": (
        "sinus tachycardia",
        "narrower",
        "answered as sinus tachycardia; supraventricular tachycardia is asked by name",
    ),
    "tachycardic": (
        "sinus tachycardia",
        "narrower",
        "answered as sinus tachycardia; supraventricular tachycardia is asked by name",
    ),
    "fast heart rate": (
        "sinus tachycardia",
        "narrower",
        "answered as sinus tachycardia; supraventricular tachycardia is asked by name",
    ),
    "heart rate is fast": ("sinus tachycardia", "narrower", "answered as sinus tachycardia"),
    "heart rate fast": ("sinus tachycardia", "narrower", "answered as sinus tachycardia"),
    "rapid heart rate": ("sinus tachycardia", "narrower", "answered as sinus tachycardia"),
    "high heart rate": ("sinus tachycardia", "narrower", "answered as sinus tachycardia"),
    "ischemia": (
        "non-specific ischemic",
        "narrower",
        "non-specific ischemic is one of the model's ischemia findings; localised ischemia is asked "
        "by its leads (ischemic in anterior leads, ...)",
    ),
    "ischemic": (
        "non-specific ischemic",
        "narrower",
        "non-specific ischemic is one of the model's ischemia findings; localised ischemia is asked "
        "by its leads",
    ),
    "myocardial ischemia": (
        "non-specific ischemic",
        "narrower",
        "non-specific ischemic is one of the model's ischemia findings; localised "
        "ischemia is asked by its leads",
    ),
    "ischemic changes": (
        "non-specific ischemic",
        "narrower",
        "non-specific ischemic is one of the model's ischemia findings; localised "
        "ischemia is asked by its leads",
    ),
}

# findings the model never learnt (or only in a form it cannot be asked about): name -> related ones it knows
_AVB_RELATED = ("first degree av block", "conduction disturbance")
_UNKNOWN: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("right ventricular hypertrophy", "rvh", "right ventricular enlargement"),
        ("hypertrophy", "left ventricular hypertrophy"),
    ),
    (
        ("septal hypertrophy", "biventricular hypertrophy", "hypertrophic cardiomyopathy"),
        ("hypertrophy", "left ventricular hypertrophy"),
    ),
    (
        (
            "second degree av block",
            "2nd degree av block",
            "second degree heart block",
            "2nd degree heart block",
            "second-degree av block",
            "2nd-degree av block",
            "mobitz",
            "wenckebach",
            "2avb",
            "second degree avb",
            "2nd degree avb",
            "second degree block",
        ),
        _AVB_RELATED,
    ),
    (
        (
            "third degree av block",
            "3rd degree av block",
            "third degree heart block",
            "3rd degree heart block",
            "third-degree av block",
            "complete heart block",
            "complete av block",
            "3avb",
            "third degree avb",
            "3rd degree avb",
            "av dissociation",
            "high grade av block",
            "high-grade av block",
        ),
        _AVB_RELATED,
    ),
    (
        (
            "wpw",
            "wolff-parkinson-white",
            "wolff parkinson white",
            "wolf-parkinson-white",
            "wolf parkinson white",
            "pre-excitation",
            "preexcitation",
            "delta wave",
            "delta waves",
        ),
        ("conduction disturbance",),
    ),
    (
        ("ventricular tachycardia", "vt", "vtach", "v-tach", "v tach"),
        ("supraventricular tachycardia", "ventricular premature complex"),
    ),
    (
        (
            "ventricular fibrillation",
            "vf",
            "vfib",
            "v-fib",
            "v fib",
            "torsades",
            "torsade de pointes",
            "ventricular flutter",
        ),
        ("ventricular premature complex",),
    ),
    (
        ("brugada", "brugada pattern", "brugada syndrome"),
        ("incomplete right bundle branch block", "non-specific st elevation"),
    ),
    (("pericarditis",), ("non-specific st elevation", "st/t change")),
    (
        (
            "hyperkalemia",
            "hypokalemia",
            "hypercalcemia",
            "hypocalcemia",
            "electrolyte disturbance",
            "electrolyte imbalance",
            "electrolytic disturbance",
        ),
        ("t-wave abnormality", "long qt-interval"),
    ),
    (
        (
            "junctional rhythm",
            "nodal rhythm",
            "junctional escape",
            "idioventricular rhythm",
            "escape rhythm",
            "ectopic atrial rhythm",
        ),
        ("sinus rhythm", "sinus bradycardia"),
    ),
    (
        ("trigeminy", "trigeminal pattern", "trigeminal"),
        (
            "bigeminal pattern (unknown origin, supraventricular, or ventricular)",
            "ventricular premature complex",
        ),
    ),
    (
        (
            "left axis deviation",
            "right axis deviation",
            "axis deviation",
            "extreme axis deviation",
            "left axis",
            "right axis",
            "northwest axis",
        ),
        ("left anterior fascicular block", "left posterior fascicular block"),
    ),
    (("short pr", "short pr interval"), ("prolonged pr interval",)),
    (("short qt", "short qt interval"), ("long qt-interval",)),
    (("u wave", "u waves"), ("t-wave abnormality",)),
    (("early repolarization", "early repolarisation"), ("non-specific st elevation",)),
    (("ventricular aneurysm", "aneurysm"), ("st/t change", "myocardial infarction")),
    (
        ("sick sinus", "sick sinus syndrome", "sinus arrest", "sinus pause", "sinoatrial block", "sa block"),
        ("sinus bradycardia", "sinus arrhythmia"),
    ),
    (
        (
            "premature beats",
            "premature complexes",
            "extrasystoles",
            "ectopic beats",
            "ectopics",
            "extrasystole",
            "ectopy",
            "premature beat",
            "premature complex",
            "skipped beats",
        ),
        ("ventricular premature complex", "atrial premature complex"),
    ),
    (("dextrocardia", "lead reversal", "limb lead reversal", "misplaced leads", "lead misplacement"), ()),
    (
        (
            "noise",
            "artifact",
            "artefact",
            "baseline wander",
            "baseline drift",
            "electrode motion",
            "powerline interference",
            "static noise",
            "burst noise",
        ),
        (),
    ),
    (
        (
            "pulmonary embolism",
            "s1q3t3",
            "hypothermia",
            "osborn wave",
            "digitalis toxicity",
            "cardiomyopathy",
            "myocarditis",
            "takotsubo",
            "angina",
            "heart failure",
        ),
        (),
    ),
    (
        ("subendocardial injury", "myocardial injury", "injury current"),
        tuple(
            f"subendocardial injury in {s} leads"
            for s in ("anterolateral", "anteroseptal", "inferior", "inferolateral", "lateral")
        ),
    ),
    (
        (
            "arrhythmia",
            "arrythmia",
            "dysrhythmia",
            "heart rhythm disorder",
            "rhythm disorder",
            "irregular heartbeat",
            "irregular heart beat",
            "irregular rhythm",
            "irregularly irregular",
            "regular rhythm",
            "irregular pulse",
        ),
        ("sinus rhythm", "atrial fibrillation", "sinus arrhythmia"),
    ),
)
UNKNOWN_FINDINGS: dict[str, tuple[str, ...]] = {n: related for names, related in _UNKNOWN for n in names}

# words that qualify a finding: a question naming "<qualifier> <finding>" asks about something more
# specific than a catalogue finding named by the finding alone
SITE_WORDS = frozenset(
    {
        *_SITES,
        "septal",
        "apical",
        "basal",
        "high lateral",
        "right ventricular",
        "posterolateral",
        "anterobasal",
        "inferobasal",
        "inferoseptal",
        "anteroapical",
    }
)
# words that give an infarction's stage, which the model does not tell
STAGE_WORDS = frozenset(
    {
        "acute",
        "old",
        "recent",
        "prior",
        "previous",
        "evolving",
        "subacute",
        "chronic",
        "new",
        "fresh",
        "hyperacute",
    }
)


# every word of every name above: a typed word that is one of them is never read as a slip of another
# (even where a bundle's catalogue lacks the finding: "bigeminal" is never "trigeminal")
NAME_WORDS = frozenset(
    w
    for texts in (SYNONYMS, *SYNONYMS.values(), LOCALISED, *LOCALISED.values(), APPROXIMATE, UNKNOWN_FINDINGS)
    for text in texts
    for w in re.findall(r"[a-z0-9]+", text)
)


@dataclasses.dataclass(frozen=True)
class FindingForm:
    """One way of naming a catalogue finding in a question."""

    text: str  # the words, normalised (lower case)
    finding: str  # the catalogue attribute; "" for a finding the model never learnt
    scope: Scope
    via: Via
    note: str = ""
    related: tuple[str, ...] = ()  # for an unknown finding: catalogue findings it is related to


@dataclasses.dataclass(frozen=True)
class FindingTerm:
    """A finding named in a question, as it was read.

    Attributes:
        asked: the words of the question that name it (normalised; as typed for a spelling slip).
        finding: the catalogue finding it was read as.
        via: ``name`` (the catalogue name), ``synonym`` or ``spelling`` (a small misspelling of either).
        scope: ``same``, ``broader`` or ``narrower`` (module docstring).
        note: what the answer does not say, for a broader or narrower reading.
    """

    asked: str
    finding: str
    via: Via
    scope: Scope = "same"
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def finding_forms(names: Iterable[str], synonyms: Mapping[str, Sequence[str]]) -> list[FindingForm]:
    """Every form that names one of ``names`` (catalogue findings) or a finding the model never learnt,
    longest first. A form listed as approximate or unknown is read so even when a bundle's synonyms
    list it as the same finding (``tachycardia`` was once a synonym of sinus tachycardia)."""
    names = set(names)
    forms: dict[str, FindingForm] = {}
    for text, related in UNKNOWN_FINDINGS.items():
        forms[text] = FindingForm(text, "", "same", "name", related=tuple(r for r in related if r in names))
    for text, (finding, scope, note) in APPROXIMATE.items():
        if finding in names:
            forms.setdefault(text, FindingForm(text, finding, scope, "synonym", note))
    for name in sorted(names):
        forms[name] = FindingForm(name, name, "same", "name")  # a catalogue name is always itself
        for s in (*synonyms.get(name, ()), *SYNONYMS.get(name, ()), *LOCALISED.get(name, ())):
            forms.setdefault(s, FindingForm(s, name, "same", "synonym"))
    return sorted(forms.values(), key=lambda f: (-len(f.text), f.text))


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
    neighbouring letters each cost one."""
    if a == b:
        return 0
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


_WORD = re.compile(r"[a-z]+")


def is_spelling_slip(typed: str, word: str, known_words: frozenset[str]) -> bool:
    """Whether ``typed`` is ``word`` misspelt (module docstring): never when ``typed`` is a word of
    some finding's name itself, nor for words shorter than five letters."""
    if typed == word:
        return True
    if typed in known_words or len(word) < 5 or not _WORD.fullmatch(typed):
        return False
    limit = 1 if len(word) <= 8 else 2
    return abs(len(typed) - len(word)) <= limit and edit_distance(typed, word) <= limit


@dataclasses.dataclass(frozen=True)
class FoundName:
    """A span of a normalised question that names a finding (``form``), as typed (``typed``)."""

    start: int
    end: int
    form: FindingForm
    typed: str
    slips: tuple[tuple[str, str], ...] = ()  # (typed word, word read) for a spelling slip
    gap: tuple[str, ...] = ()  # words typed between the name's words ("QT is not prolonged": is, not)


_TOKEN = re.compile(r"[a-z0-9]+")
# words a question may put between the words of a name: "the QT is not prolonged", "heart rate really fast"
GAP_WORDS = ("is", "are", "was", "were", "not", "no", "really", "very", "too", "slightly", "markedly")
_GAP = r"(?:\s+(?:" + "|".join(GAP_WORDS) + r"))*\s+"


class NameFinder:
    """Finds the findings a normalised question names: exact forms (words of a name may have
    :data:`GAP_WORDS` between them; a trailing ``s`` allowed) and spelling slips of them, the longest
    name first, never overlapping (so ``incomplete left bundle branch block`` is never ``LBBB``, and
    ``sinus bradicardia`` is sinus bradycardia, not sinus rhythm).

    Args:
        forms: :func:`finding_forms` of a catalogue.
        normalize: how questions are normalised (``diagecg.question_text.normalize_question``).
        extra_words: other words a question may use that must never be read as a slip (keywords).
    """

    def __init__(
        self, forms: Sequence[FindingForm], normalize: Callable[[str], str], extra_words: Iterable[str] = ()
    ) -> None:
        self.forms = list(forms)
        # each form as a normalised question spells it ("(unknown origin, sv, or ventricular)" loses commas)
        spelled = [(normalize(f.text), f) for f in forms]
        self._patterns = [
            (
                re.compile(
                    r"(?<![a-z0-9])" + _GAP.join(re.escape(w) for w in t.split(" ")) + r"s?(?![a-z0-9])"
                ),
                f,
            )
            for t, f in spelled
        ]
        self._tokens = [(tuple(_TOKEN.findall(t)), f) for t, f in spelled]
        self.known_words = (
            frozenset(w for toks, _ in self._tokens for w in toks) | NAME_WORDS | frozenset(extra_words)
        )
        self._by_length: dict[int, list[str]] = {}
        for w in sorted(self.known_words):
            for n in range(len(w) - 2, len(w) + 3):
                self._by_length.setdefault(n, []).append(w)
        self._index: dict[str, list[int]] = {}
        for i, (toks, _) in enumerate(self._tokens):
            for w in set(toks):
                self._index.setdefault(w, []).append(i)
        self._slip_cache: dict[str, frozenset[str]] = {}

    def find(self, text: str) -> list[FoundName]:
        """The names in ``text``, in order of appearance."""
        candidates: list[tuple[int, int, int, FoundName]] = []
        for (pattern, form), (toks, _) in zip(self._patterns, self._tokens, strict=True):
            for m in pattern.finditer(text):
                gap = tuple(
                    w for w in _TOKEN.findall(m.group()) if w not in toks and w.rstrip("s") not in toks
                )
                candidates.append(
                    (
                        -sum(map(len, toks)),
                        0,
                        m.start(),
                        FoundName(m.start(), m.end(), form, m.group(), gap=gap),
                    )
                )
        candidates.extend(self._slips(text))
        taken = [False] * len(text)
        out: list[FoundName] = []
        for *_, hit in sorted(candidates, key=lambda c: c[:3]):
            if not any(taken[hit.start : hit.end]):
                taken[hit.start : hit.end] = [True] * (hit.end - hit.start)
                out.append(hit)
        return sorted(out, key=lambda f: f.start)

    def _slip_targets(self, typed: str) -> frozenset[str]:
        """The words of finding names that ``typed`` may be a misspelling of (cached)."""
        hit = self._slip_cache.get(typed)
        if hit is None:
            spellings = {typed, typed.removesuffix("s")}
            hit = frozenset(
                w
                for t in spellings
                for w in self._by_length.get(len(t), ())
                if is_spelling_slip(t, w, self.known_words)
            )
            if len(self._slip_cache) < 4096:
                self._slip_cache[typed] = hit
        return hit

    def _slips(self, text: str) -> list[tuple[int, int, int, FoundName]]:
        """Candidate names with at least one misspelt word: (-letters, edit cost, start, name)."""
        words = list(_TOKEN.finditer(text))
        targets = [
            self._slip_targets(m.group()) if m.group() not in self.known_words else frozenset() for m in words
        ]
        if not any(targets):
            return []
        candidates: list[tuple[int, int, int, FoundName]] = []
        forms = {i for t in targets for w in t for i in self._index.get(w, ())}
        for i in range(len(words)):
            for f in forms:
                toks, form = self._tokens[f]
                k = len(toks)
                letters = sum(len(t) for t in toks)
                if i + k > len(words) or letters < (8 if k == 1 else 5):
                    continue
                span = words[i : i + k]
                if any(b.start() - a.end() > 2 for a, b in zip(span, span[1:], strict=False)):
                    continue  # not adjacent in the question
                slips = []
                for m, word, target in zip(span, toks, targets[i : i + k], strict=True):
                    typed = m.group()
                    if typed == word or typed == word + "s":
                        continue
                    if word not in target:
                        break
                    slips.append((typed, word))
                else:
                    if slips:
                        cost = sum(edit_distance(a, b) for a, b in slips)
                        hit = FoundName(
                            span[0].start(),
                            span[-1].end(),
                            form,
                            text[span[0].start() : span[-1].end()],
                            tuple(slips),
                        )
                        candidates.append((-letters, cost, span[0].start(), hit))
        return candidates
