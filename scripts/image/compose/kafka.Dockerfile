# A stand-in for apache/kafka where it cannot be pulled: the same broker jars the project's
# tests run (scripts/kafka/pom.xml) on Debian's OpenJDK, configured from KAFKA_* variables like
# the official image (KAFKA_FOO_BAR=x becomes foo.bar=x) and formatted with CLUSTER_ID.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN mkdir -p /usr/share/man/man1 /usr/share/man/man7 \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        openjdk-17-jre-headless >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 1000 appuser \
 && useradd --system --uid 1000 --gid 1000 --no-create-home appuser \
 && mkdir -p /var/lib/kafka/data /opt/kafka/config \
 && chown -R 1000:1000 /var/lib/kafka /opt/kafka/config
COPY lib/ /opt/kafka/libs/
COPY ready/ /opt/kafka/ready/
COPY kafka-entrypoint.sh /opt/kafka/entrypoint.sh
COPY kafka-broker-api-versions.sh /opt/kafka/bin/kafka-broker-api-versions.sh
USER 1000:1000
EXPOSE 9092
ENTRYPOINT ["/opt/kafka/entrypoint.sh"]
