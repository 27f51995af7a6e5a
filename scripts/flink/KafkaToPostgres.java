// The bench's peer (P4): Flink SQL in a local mini-cluster doing the service's Kafka-to-PostgreSQL
// job on the same events. Run by scripts/flink/flink.sh with the jars of pom.xml on the classpath:
//   KafkaToPostgres <bootstrap> <topic> <jdbc url> <user> <password> <table> <object reuse>
//                   <parallelism> <flush rows>
// The source is bounded at the topic's end offsets when the job starts, so the job finishes once
// every row is in the table. Progress goes to stdout as one JSON object per line (epoch ms):
// spawned, submitting, running (the job), tasks_running (every task), finished.
import java.net.HttpURLConnection;
import java.net.ServerSocket;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.flink.api.common.JobStatus;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.PipelineOptions;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.TableResult;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;

public class KafkaToPostgres {
  private static final String ROW =
      "id BIGINT, email STRING, first_name STRING, last_name STRING, company STRING,"
          + " job_title STRING, city STRING, plan STRING, mrr DOUBLE, updated_at STRING";
  private static final String COLUMNS =
      "id, email, first_name, last_name, company, job_title, city, plan, mrr, updated_at";

  private static String literal(String value) {
    return "'" + value.replace("'", "''") + "'";
  }

  private static final Pattern COUNTS = Pattern.compile("\"status-counts\":\\{([^}]*)\\}");
  private static final Pattern COUNT = Pattern.compile("\"([A-Z_]+)\":(\\d+)");

  /** Whether every task of the job is RUNNING (or already FINISHED), from the REST API. */
  private static boolean tasksRunning(int port, String jobId) {
    try {
      HttpURLConnection http =
          (HttpURLConnection) new URL("http://127.0.0.1:" + port + "/jobs/" + jobId).openConnection();
      http.setConnectTimeout(1000);
      http.setReadTimeout(1000);
      if (http.getResponseCode() != 200) {
        return false;
      }
      String body = new String(http.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
      Matcher counts = COUNTS.matcher(body);
      if (!counts.find()) {
        return false;
      }
      Matcher count = COUNT.matcher(counts.group(1));
      int ready = 0, other = 0;
      while (count.find()) {
        int n = Integer.parseInt(count.group(2));
        if (count.group(1).equals("RUNNING") || count.group(1).equals("FINISHED")) {
          ready += n;
        } else {
          other += n;
        }
      }
      return ready > 0 && other == 0;
    } catch (java.io.IOException e) {
      return false;
    }
  }

  private static int freePort() throws java.io.IOException {
    try (ServerSocket socket = new ServerSocket(0)) {
      return socket.getLocalPort();
    }
  }

  private static void say(String event, long at) {
    System.out.println("{\"event\": \"" + event + "\", \"at_ms\": " + at + "}");
    System.out.flush();
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 9) {
      System.err.println(
          "usage: KafkaToPostgres bootstrap topic jdbc-url user password table object-reuse"
              + " parallelism flush-rows");
      System.exit(2);
    }
    String bootstrap = args[0], topic = args[1], url = args[2], user = args[3];
    String password = args[4], table = args[5];
    boolean objectReuse = Boolean.parseBoolean(args[6]);
    int parallelism = Integer.parseInt(args[7]);
    int flushRows = Integer.parseInt(args[8]);
    say("spawned", ProcessHandle.current().info().startInstant().map(Instant::toEpochMilli)
        .orElse(System.currentTimeMillis()));

    Configuration conf = new Configuration();
    conf.set(PipelineOptions.OBJECT_REUSE, objectReuse);
    conf.set(CoreOptions.DEFAULT_PARALLELISM, parallelism);
    int restPort = freePort();
    conf.set(RestOptions.BIND_ADDRESS, "127.0.0.1");
    conf.set(RestOptions.ADDRESS, "127.0.0.1");
    conf.set(RestOptions.BIND_PORT, String.valueOf(restPort));
    conf.set(RestOptions.PORT, restPort);
    StreamExecutionEnvironment env =
        StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);
    StreamTableEnvironment tables =
        StreamTableEnvironment.create(env, EnvironmentSettings.inStreamingMode());

    tables.executeSql(
        "CREATE TABLE events (`rows` ARRAY<ROW<" + ROW + ">>) WITH ("
            + " 'connector' = 'kafka',"
            + " 'topic' = " + literal(topic) + ","
            + " 'properties.bootstrap.servers' = " + literal(bootstrap) + ","
            + " 'properties.group.id' = " + literal(topic + "-P4") + ","
            + " 'scan.startup.mode' = 'earliest-offset',"
            + " 'scan.bounded.mode' = 'latest-offset',"
            + " 'format' = 'json')");
    tables.executeSql(
        "CREATE TABLE target (" + ROW + ", PRIMARY KEY (id) NOT ENFORCED) WITH ("
            + " 'connector' = 'jdbc',"
            + " 'url' = " + literal(url) + ","
            + " 'table-name' = " + literal(table) + ","
            + " 'username' = " + literal(user) + ","
            + " 'password' = " + literal(password) + ","
            + " 'sink.buffer-flush.max-rows' = '" + flushRows + "',"
            + " 'sink.buffer-flush.interval' = '1s')");

    say("submitting", System.currentTimeMillis());
    TableResult result =
        tables.executeSql(
            "INSERT INTO target SELECT " + COLUMNS + " FROM events"
                + " CROSS JOIN UNNEST(events.`rows`) AS r (" + COLUMNS + ")");
    JobClient job = result.getJobClient().orElseThrow();
    JobStatus status;
    while ((status = job.getJobStatus().get()) != JobStatus.RUNNING && !status.isTerminalState()) {
      Thread.sleep(20);
    }
    say("running", System.currentTimeMillis());
    // Tasks deployed and initialised (generated code compiled, connections open): the
    // analogue of a consumer that has joined its group and is about to fetch.
    String jobId = job.getJobID().toString();
    while (!tasksRunning(restPort, jobId) && !job.getJobStatus().get().isTerminalState()) {
      Thread.sleep(20);
    }
    say("tasks_running", System.currentTimeMillis());
    result.await();
    say("finished", System.currentTimeMillis());
    System.exit(0);
  }
}
