// Exits 0 once the broker at args[0] answers a metadata request (describeCluster), 1 otherwise.
// Run as a single-file program: java -cp '<kafka lib>/*' Ready.java 127.0.0.1:9092 [timeoutSeconds]
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class Ready {
    public static void main(String[] args) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(args.length > 1 ? Long.parseLong(args[1]) : 1);
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "1000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "1500");
        try (Admin admin = Admin.create(props)) {
            while (true) {
                try {
                    int nodes = admin.describeCluster().nodes().get(1500, TimeUnit.MILLISECONDS).size();
                    if (nodes > 0) System.exit(0);
                } catch (Exception e) {
                    // not ready yet
                }
                if (System.nanoTime() > deadline) System.exit(1);
                Thread.sleep(300);
            }
        } catch (InterruptedException e) {
            System.exit(1);
        }
    }
}
