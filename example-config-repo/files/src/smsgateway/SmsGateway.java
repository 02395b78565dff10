import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;

/**
 * A stand-in SMS gateway for Clarity's demo sandboxes. It answers GET /health with OK and
 * GET / with the gateway name and its config file (values of password, secret and token keys
 * masked, so the demo never shows a secret).
 *
 * Settings: port = first argument or SMSGW_PORT (default 8080); config file = second argument
 * or SMSGW_CONFIG (default conf/gateway.properties); bind address = SMSGW_BIND (default
 * 0.0.0.0). The name is the config file's gateway.name, else SMSGW_NAME, else "smsgateway".
 */
public final class SmsGateway {
    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(setting(args, 0, "SMSGW_PORT", "8080"));
        Path config = Path.of(setting(args, 1, "SMSGW_CONFIG", "conf/gateway.properties"));
        String bind = setting(args, 2, "SMSGW_BIND", "0.0.0.0");
        HttpServer server = HttpServer.create(new InetSocketAddress(bind, port), 16);
        server.createContext("/health", ex -> reply(ex, 200, "OK\n"));
        server.createContext("/", ex -> {
            if (!ex.getRequestURI().getPath().equals("/")) {
                reply(ex, 404, "not found\n");
                return;
            }
            String text;
            try {
                text = Files.readString(config);
            } catch (IOException e) {
                reply(ex, 500, "cannot read " + config + ": " + e + "\n");
                return;
            }
            reply(ex, 200, name(text) + "\n\n" + masked(text));
        });
        server.start();
        System.out.println("smsgateway listening on " + bind + ":" + port + ", config " + config);
    }

    private static String setting(String[] args, int index, String env, String fallback) {
        if (args.length > index && !args[index].isEmpty()) {
            return args[index];
        }
        String value = System.getenv(env);
        return value == null || value.isEmpty() ? fallback : value;
    }

    private static String name(String config) {
        for (String line : config.split("\n")) {
            if (line.startsWith("gateway.name=")) {
                return line.substring("gateway.name=".length()).trim();
            }
        }
        String env = System.getenv("SMSGW_NAME");
        return env == null || env.isEmpty() ? "smsgateway" : env;
    }

    private static String masked(String config) {
        StringBuilder out = new StringBuilder();
        for (String line : config.split("\n", -1)) {
            int eq = line.indexOf('=');
            String key = eq < 0 ? "" : line.substring(0, eq).toLowerCase(Locale.ROOT);
            boolean secret = !line.startsWith("#")
                && (key.contains("password") || key.contains("secret") || key.contains("token"));
            out.append(secret ? line.substring(0, eq + 1) + "***" : line).append('\n');
        }
        return out.toString().stripTrailing() + "\n";
    }

    private static void reply(HttpExchange ex, int status, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        ex.sendResponseHeaders(status, bytes.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(bytes);
        }
    }
}
