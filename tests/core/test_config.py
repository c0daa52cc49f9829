"""Every config class of diagecg (core, datasets, training, export, checkpoint metadata) round-trips
exactly through JSON; overrides parse."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from diagecg.config import (
    PRESETS,
    ConfigMixin,
    EncoderConfig,
    FSQConfig,
    PreprocessConfig,
    SummaryConfig,
    apply_overrides,
    preset,
)
from diagecg.errors import ConfigError, DiagEcgError, InputError

# every module that defines a config class; a new one must be listed here (test_every_config_class_is_covered)
CONFIG_MODULES = (
    "diagecg.config",
    "diagecg.prompts",
    "diagecg.datasets.ecgqa",
    "diagecg.llm_meta",
    "diagecg.training.configs",
    "diagecg.training.eval_data",
    "diagecg.training.bottleneck",
    "diagecg.export.build_bundle",
)


def _subclasses(cls: type) -> set[type]:
    return {s for c in cls.__subclasses__() for s in (c, *_subclasses(c))}


for _name in CONFIG_MODULES:
    importlib.import_module(_name)
CONFIG_CLASSES = sorted(
    (
        c
        for c in _subclasses(ConfigMixin)
        if dataclasses.is_dataclass(c) and c.__module__.startswith("diagecg.")
    ),
    key=lambda c: c.__name__,
)


def _candidates(tp: Any, default: Any) -> list[Any]:
    """Values other than ``default`` a field of type ``tp`` might take."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return [None] if default is not None else _candidates(inner, _example(inner))
    if origin is typing.Literal:
        return [a for a in args if a != default]
    if tp is bool:
        return [not default]
    if tp is int:
        return [default + 1, default * 2, default - 1] if isinstance(default, int) else [1, 8]
    if tp is float:
        d = default if isinstance(default, float) else 1.0
        return [d * 0.5, d * 2 + 0.25, 0.1, 1.5]
    if tp is str:
        return ["center", "other"] if default != "center" else ["start"]
    if origin is tuple and default:
        return [tuple(default[:-1]), (*default, default[-1]), tuple(reversed(default))]
    return []


def _example(tp: Any) -> Any:
    return {int: 1, float: 1.0, str: "x", bool: True}.get(tp)


def perturbed(cls: type) -> Any:
    """An instance that differs from the default in as many fields as ``__post_init__`` allows."""
    cfg = cls()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        for value in _candidates(hints[f.name], getattr(cfg, f.name)):
            try:
                cfg = dataclasses.replace(cfg, **{f.name: value})
                break
            except (ValueError, TypeError):
                continue
    return cfg


def test_every_config_class_is_covered() -> None:
    names = {c.__name__ for c in CONFIG_CLASSES}
    assert {
        "PreprocessConfig",
        "QualityConfig",
        "FSQConfig",
        "EncoderConfig",
        "VocabConfig",
        "GenerationConfig",
        "SummaryConfig",
        "PromptConfig",
        "QuestionGenConfig",
        "TokenizerTrainConfig",
        "PretrainConfig",
        "SFTConfig",
        "EvalConfig",
        "BottleneckConfig",
        "ExportConfig",
        "LlmMeta",
        "StageRecord",
        "BaseModelRef",
    } <= names
    assert {c.__module__ for c in CONFIG_CLASSES} == set(CONFIG_MODULES)


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_load_save_roundtrip(cls: type, tmp_path: Path) -> None:
    for cfg in (cls(), perturbed(cls)):
        path = tmp_path / "c.json"
        cfg.save(path)
        loaded = cls.load(path)
        assert loaded == cfg and type(loaded) is cls
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"  # stable on disk
        assert cls.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_perturbed_instance_differs_from_default(cls: type) -> None:
    other, default = perturbed(cls), cls()
    changed = [f.name for f in dataclasses.fields(cls) if getattr(other, f.name) != getattr(default, f.name)]
    assert changed, f"{cls.__name__}: no field could be changed, the round trip test proves nothing"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_roundtrip(name: str, tmp_path: Path) -> None:
    for i, cfg in enumerate(PRESETS[name]):
        cfg.save(tmp_path / f"{i}.json")
        assert type(cfg).load(tmp_path / f"{i}.json") == cfg


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_unknown_key_warns_and_is_dropped(cls: type, caplog: pytest.LogCaptureFixture) -> None:
    data = {**cls().to_dict(), "zz_not_a_field": 3}
    with caplog.at_level(logging.WARNING, logger="diagecg.config"):
        assert cls.from_dict(data) == cls()
    assert "zz_not_a_field" in caplog.text and cls.__name__ in caplog.text


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_missing_optional_keys_take_defaults(cls: type) -> None:
    assert cls.from_dict({}) == cls()


def test_summary_config_with_findings_roundtrips(tmp_path: Path) -> None:
    # the generic round trip cannot fill the empty-tuple fields: findings need measurements
    cfg = SummaryConfig(
        findings=("NORM", "MI", "AFIB"), levels=5, features=("heart_rate_bpm", "II.r_mv"), hidden=32
    )
    cfg.save(tmp_path / "s.json")
    assert SummaryConfig.load(tmp_path / "s.json") == cfg
    assert SummaryConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.enabled and cfg.n_tokens == 3 and cfg.n_codes == 15
    off = SummaryConfig()
    assert not off.enabled and off.n_tokens == 0 and off.n_codes == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"levels": 1}, "levels"),
        ({"findings": ("MI", "MI"), "features": ("x",)}, "findings"),
        ({"findings": ("MI",)}, "features"),
        ({"hidden": 0}, "hidden"),
    ],
)
def test_summary_config_rejects_bad_values(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"SummaryConfig\.{field}="):
        SummaryConfig(**changes)


@dataclasses.dataclass(frozen=True)
class _Needs(ConfigMixin):
    name: str
    fsq: FSQConfig = FSQConfig()
    scale: float | None = None


def test_missing_required_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="_Needs: required key 'name' is missing"):
        _Needs.from_dict({"scale": 1.0})


def test_nested_config_and_int_to_float_roundtrip() -> None:
    cfg = _Needs.from_dict({"name": "a", "fsq": {"levels": [8, 5, 5, 5]}, "scale": 2})
    assert cfg == _Needs("a", FSQConfig((8, 5, 5, 5)), 2.0) and isinstance(cfg.scale, float)
    assert _Needs.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_from_dict_rejects_non_dict_and_load_missing_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expects a dict"):
        PreprocessConfig.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="nope.json"):
        PreprocessConfig.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"fs_hz": 100,')
    with pytest.raises(ConfigError, match=r"PreprocessConfig: config file .*bad.json is not JSON"):
        PreprocessConfig.load(tmp_path / "bad.json")


# --- JSON types: one check for every config (json_field_value) ----------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"steps": "100"}, r"TokenizerTrainConfig\.steps='100' is invalid: expected an integer, got str"),
        ({"steps": 100.5}, r"TokenizerTrainConfig\.steps=100\.5 is invalid: expected an integer, got float"),
        ({"steps": 100.0}, r"TokenizerTrainConfig\.steps=100\.0 is invalid: expected an integer, got float"),
        ({"steps": True}, r"TokenizerTrainConfig\.steps=True is invalid: expected an integer, got bool"),
        ({"steps": None}, r"TokenizerTrainConfig\.steps=None is invalid: expected an integer, got NoneType"),
        ({"lr": "0.1"}, r"TokenizerTrainConfig\.lr='0\.1' is invalid: expected a number, got str"),
        ({"lr": False}, r"TokenizerTrainConfig\.lr=False is invalid: expected a number, got bool"),
        ({"preset": 100}, r"TokenizerTrainConfig\.preset=100 is invalid: expected a string, got int"),
        ({"augment": "false"}, r"TokenizerTrainConfig\.augment='false' is invalid: expected true or false"),
        ({"augment": 0}, r"TokenizerTrainConfig\.augment=0 is invalid: expected true or false, got int"),
        ({"max_train_records": 1.5}, r"max_train_records=1\.5 is invalid: expected an integer or null"),
        (
            {"train_folds": [1, "2"]},
            r"TokenizerTrainConfig\.train_folds\[1\]='2' is invalid: expected an int",
        ),
        ({"train_folds": 1}, r"TokenizerTrainConfig\.train_folds=1 is invalid: expected a list of integers"),
        ({"encoder": {"groups": 2.5}}, r"EncoderConfig\.groups=2\.5 is invalid: expected an integer"),
        ({"encoder": 8}, r"\.encoder=8 is invalid: expected an object \(EncoderConfig\) or null, got int"),
        ({"stem_channels": "8"}, r"EncoderConfig\.stem_channels='8' is invalid"),
        ({"encoder": {"groups": 0}}, r"EncoderConfig\.groups=0 is invalid: must be >= 1"),
    ],
)
def test_json_values_of_the_wrong_type_are_one_line_config_errors(
    data: dict, match: str, tmp_path: Path
) -> None:
    from diagecg.training.configs import TokenizerTrainConfig

    with pytest.raises(ConfigError, match=match) as from_dict:
        TokenizerTrainConfig.from_dict(data)
    assert "\n" not in str(from_dict.value)
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=match):
        TokenizerTrainConfig.load(tmp_path / "c.json")


def test_json_checks_reach_every_config_module() -> None:
    from diagecg.datasets.ecgqa import QuestionGenConfig
    from diagecg.export.build_bundle import ExportConfig
    from diagecg.nn.llm_checkpoint import LlmMeta
    from diagecg.prompts import PromptConfig
    from diagecg.training.configs import SFTConfig
    from diagecg.training.evaluate import EvalConfig

    cases = [
        (EvalConfig, {"batch_size": "16"}, "EvalConfig.batch_size"),
        (ExportConfig, {"min_top1": {"q8_0": "0.9"}}, "ExportConfig.min_top1.q8_0"),
        (ExportConfig, {"quants": "q8_0"}, "ExportConfig.quants"),
        (SFTConfig, {"method": "qlora"}, "SFTConfig.method='qlora' is invalid: expected one of"),
        (SFTConfig, {"report_ratio": "0.5"}, "SFTConfig.report_ratio"),
        (PromptConfig, {"template": 3}, "PromptConfig.template"),
        (PromptConfig, {"template": "{ecg} {question"}, "PromptConfig.template"),
        (QuestionGenConfig, {"n_verify": -1}, "QuestionGenConfig.n_verify=-1 is invalid: must be >= 0"),
        (LlmMeta, {"vocab": {"n_codes": 12.5}}, "VocabConfig.n_codes=12.5"),
    ]
    for cls, data, match in cases:
        with pytest.raises(ConfigError, match=re.escape(match)):
            cls.from_dict(data)


def test_json_numbers_keep_their_meaning() -> None:
    from diagecg.training.configs import TokenizerTrainConfig

    cfg = TokenizerTrainConfig.from_dict(
        {"steps": 100, "lr": 1, "max_train_records": None, "train_folds": [1, 2], "eval_folds": [9]}
    )
    assert cfg.steps == 100 and cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.train_folds == (1, 2)


def test_config_error_is_a_usage_error_and_still_a_value_error() -> None:
    assert issubclass(ConfigError, InputError) and issubclass(ConfigError, DiagEcgError)
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError):
        PreprocessConfig(crop="middle")
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("1000hz")


def test_invalid_values_name_field_value_and_allowed() -> None:
    with pytest.raises(ValueError, match=r"PreprocessConfig\.crop='middle' is invalid: one of"):
        PreprocessConfig(crop="middle")
    with pytest.raises(ValueError, match=r"PreprocessConfig\.lowpass_hz=60.0 is invalid"):
        PreprocessConfig(fs_hz=100, lowpass_hz=60.0)


# --- apply_overrides --------------------------------------------------------------------------------------


def test_overrides_parse_by_field_type() -> None:
    cfg = apply_overrides(
        PreprocessConfig(),
        ["fs_hz=100", "window_s=5", "highpass_hz=none", "lowpass_hz=40", "crop=center", "pad_short_s = 0.25"],
    )
    assert cfg == PreprocessConfig(
        fs_hz=100, window_s=5.0, highpass_hz=None, lowpass_hz=40.0, crop="center", pad_short_s=0.25
    )
    assert isinstance(cfg.window_s, float) and isinstance(cfg.fs_hz, int)


def test_overrides_parse_tuples() -> None:
    assert apply_overrides(FSQConfig(), ["levels=8,5,5,5"]).levels == (8, 5, 5, 5)
    assert apply_overrides(EncoderConfig(), ["stage_channels=16, 32"]).stage_channels == (16, 32)


def test_overrides_keep_the_original_unchanged() -> None:
    base = PreprocessConfig()
    apply_overrides(base, ["fs_hz=100"])
    assert base == PreprocessConfig()


@pytest.mark.parametrize(
    ("pair", "match"),
    [
        ("nope=1", "unknown key 'nope'"),
        ("fs_hz", "expects key=value"),
        ("fs_hz=fast", "cannot parse"),
        ("window_s=ten", "cannot parse"),
        ("crop=middle", "crop='middle' is invalid"),
        ("highpass_hz=400", "highpass_hz=400.0 is invalid"),
    ],
)
def test_bad_overrides_are_errors(pair: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        apply_overrides(PreprocessConfig(), [pair])


@dataclasses.dataclass(frozen=True)
class _Flags(ConfigMixin):
    verbose: bool = False
    mode: typing.Literal["a", "b"] = "a"


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("yes", True), ("off", False)])
def test_bool_overrides(text: str, value: bool) -> None:
    assert apply_overrides(_Flags(), [f"verbose={text}"]).verbose is value


def test_bool_and_literal_override_errors() -> None:
    with pytest.raises(ValueError, match="cannot parse"):
        apply_overrides(_Flags(), ["verbose=maybe"])
    with pytest.raises(ValueError, match="cannot parse"):
        apply_overrides(_Flags(), ["mode=c"])
    assert apply_overrides(_Flags(), ["mode=b"]).mode == "b"
