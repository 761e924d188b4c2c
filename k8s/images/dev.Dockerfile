# Dev dependencies for the local cluster (k8s/images.sh build-dev): a single-node Kafka (KRaft) and
# S3Proxy, from the same Maven jars as the local stack (stack/*/pom.xml). The build context is the
# folder k8s/images.sh assembles (kafka-lib/, s3proxy-lib/, the start scripts). Not for production.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS java
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 dev \
 && useradd --system --uid 10001 --gid dev --home-dir /tmp --shell /usr/sbin/nologin dev

FROM java AS kafka
COPY kafka-lib /opt/kafka/lib
COPY kafka.sh /usr/local/bin/kafka.sh
USER 10001:10001
EXPOSE 9092
ENTRYPOINT ["/usr/local/bin/kafka.sh"]

FROM java AS s3proxy
COPY s3proxy-lib /opt/s3proxy/lib
COPY s3proxy.sh /usr/local/bin/s3proxy.sh
USER 10001:10001
EXPOSE 9000
ENTRYPOINT ["/usr/local/bin/s3proxy.sh"]
