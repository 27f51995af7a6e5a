// The bench's peer (P4): Flink SQL in a local mini-cluster doing the service's Kafka-to-PostgreSQL
// job on the same events. Run by scripts/flink/flink.sh with the jars of pom.xml on the classpath:
//   KafkaToPostgres <bootstrap> <topic> <jdbc url> <user> <password> <table> <object reuse>
//                   <parallelism> <flush rows>
// The source is bounded at the topic's end offsets when the job starts, so the job finishes once
// every row is in the table. Progress goes to stdout as one JSON object per line (epoch ms):
// spawned, submitting, running (the job's state), finished.
import java.time.Instant;
import org.apache.flink.api.common.JobStatus;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.PipelineOptions;
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
    result.await();
    say("finished", System.currentTimeMillis());
    System.exit(0);
  }
}
