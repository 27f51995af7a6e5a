# Sourced by the scripts that run Java from Maven Central jars (the broker, Kafka Connect with
# Debezium, the Flink peer): the jars a pom.xml lists are copied into $lib once, and again
# whenever the pom changes. Needs $here (the pom's folder), $cache, $lib and say().
#   resolve_jars "what is being resolved"
resolve_jars() {
  if [ -f "$lib/.resolved" ] && [ "$lib/.resolved" -nt "$here/pom.xml" ]; then return; fi
  command -v mvn >/dev/null || { say "mvn not found: install Maven (apt-get install maven)"; exit 1; }
  say "resolving $1 from Maven Central (pom: ${here#"$root/"}/pom.xml)"
  rm -rf "$lib"
  mvn -q -B -f "$here/pom.xml" -Dmaven.repo.local="$cache/m2" \
    dependency:copy-dependencies -DoutputDirectory="$lib" -DincludeScope=runtime
  touch "$lib/.resolved"
}
