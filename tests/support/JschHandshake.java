// Runs JSch's SSH handshake against HOST PORT and says whether it got through.
//
// Usage: java -cp /usr/share/java/jsch.jar:DIR JschHandshake HOST PORT
//
// Connects as a dummy user with a dummy password, host key checking off and no known_hosts file.
// JSch does the version exchange, KEXINIT negotiation and the key exchange before it tries to
// authenticate, so "Auth fail" or "Auth cancel" means the handshake got through. Prints `ok`
// (exit 0) or `fail: <message>` (exit 1) on standard output.

import com.jcraft.jsch.JSch;
import com.jcraft.jsch.JSchException;
import com.jcraft.jsch.Session;

public final class JschHandshake {
    private JschHandshake() {}

    public static void main(String[] args) {
        if (args.length != 2) {
            System.err.println("usage: JschHandshake HOST PORT");
            System.exit(2);
        }
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        String result;
        Session session = null;
        try {
            JSch jsch = new JSch();
            session = jsch.getSession("nobody", host, port);
            session.setPassword("not-a-password");
            session.setConfig("StrictHostKeyChecking", "no");
            // Only password: no GSSAPI (Kerberos) lookups, no keys, no prompts.
            session.setConfig("PreferredAuthentications", "password");
            session.connect(5000);
            // Authenticated with a dummy password: the handshake certainly got through.
            result = "ok";
        } catch (JSchException e) {
            String message = String.valueOf(e.getMessage());
            Throwable cause = e.getCause();
            if (message.equals("Auth fail") || message.equals("Auth cancel")) {
                result = "ok";
            } else {
                result = "fail: " + message + (cause == null ? "" : " (" + cause + ")");
            }
        } catch (RuntimeException e) {
            result = "fail: " + e;
        } finally {
            if (session != null) {
                session.disconnect();
            }
        }
        System.out.println(result);
        System.exit(result.equals("ok") ? 0 : 1);
    }
}
