// A Java client of `diagecg serve` using only the JDK (java.net.http, Java 11+): it sends a record's files
// as base64 in one JSON body to POST /v1/json/answer and prints the server's JSON answer.
//
//   java examples/clients/DiagEcg.java http://127.0.0.1:8000 "Is the rhythm regular?" \
//        examples/records/00180_lr.hea examples/records/00180_lr.dat
//
// A server started with --token-file needs the token: put it in the DIAGECG_TOKEN environment variable.
// The request waits 150 s, longer than the server's own timeout (120 s by default), so a slow answer
// arrives as the server's 504 error line instead of a client-side timeout.
// Exit status: 0 answered, 1 the server answered with an error (its JSON line is printed), 2 bad arguments.

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Base64;

public class DiagEcg {
    static String quote(String s) {  // a JSON string
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                default -> {
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
                }
            }
        }
        return b.append('"').toString();
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        if (args.length < 3) {
            System.err.println("usage: DiagEcg SERVER_URL QUESTION FILE [FILE ...]");
            System.exit(2);
        }
        StringBuilder files = new StringBuilder();
        for (int i = 2; i < args.length; i++) {
            Path p = Path.of(args[i]);
            String data = Base64.getEncoder().encodeToString(Files.readAllBytes(p));
            files.append(i > 2 ? "," : "").append("{\"name\":").append(quote(p.getFileName().toString()))
                 .append(",\"content_base64\":").append(quote(data)).append('}');
        }
        String body = "{\"questions\":[" + quote(args[1]) + "],\"files\":[" + files + "]}";

        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(args[0] + "/v1/json/answer"))
                .timeout(Duration.ofSeconds(150))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body));
        String token = System.getenv("DIAGECG_TOKEN");
        if (token != null && !token.isEmpty()) request.header("Authorization", "Bearer " + token);

        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        HttpResponse<String> response = client.send(request.build(), HttpResponse.BodyHandlers.ofString());
        System.out.println(response.body());
        System.exit(response.statusCode() == 200 ? 0 : 1);
    }
}
