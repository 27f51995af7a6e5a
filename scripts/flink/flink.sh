#!/usr/bin/env bash
# Runs the bench's Flink SQL peer (KafkaToPostgres.java) in a local mini-cluster, from jars that
# Maven resolves per pom.xml into ${FLINK_CACHE_DIR:-.cache/flink}/lib.
#   scripts/flink/flink.sh resolve        fetch the jars (once; again when pom.xml changes)
#   scripts/flink/flink.sh run ARGS...    run the job (arguments: see KafkaToPostgres.java)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${FLINK_CACHE_DIR:-$root/.cache/flink}"
lib="$cache/lib"

say() { echo "flink: $*" >&2; }

resolve() {
  if [ -f "$lib/.resolved" ] && [ "$lib/.resolved" -nt "$here/pom.xml" ]; then return; fi
  command -v java >/dev/null || { say "java not found: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"; exit 1; }
  command -v mvn >/dev/null || { say "mvn not found: install Maven (apt-get install maven)"; exit 1; }
  say "resolving Flink from Maven Central (pom: scripts/flink/pom.xml)"
  rm -rf "$lib"
  mvn -q -B -f "$here/pom.xml" -Dmaven.repo.local="$cache/m2" \
    dependency:copy-dependencies -DoutputDirectory="$lib" -DincludeScope=runtime
  touch "$lib/.resolved"
}

# What Flink's own launcher passes on Java 17 (its reflection into the JDK).
java_opts=(
  -Xms512m "-Xmx${FLINK_HEAP:-1g}" -XX:+UseG1GC -Djava.awt.headless=true
  -Dorg.slf4j.simpleLogger.defaultLogLevel=warn
  --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.text=ALL-UNNAMED
  --add-opens=java.base/java.time=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
)

case "${1:-}" in
  resolve) resolve ;;
  run)
    shift
    resolve
    exec java "${java_opts[@]}" -cp "$lib/*" "$here/KafkaToPostgres.java" "$@"
    ;;
  *) echo "usage: $0 resolve|run ARGS..." >&2; exit 2 ;;
esac
