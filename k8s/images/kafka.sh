#!/bin/sh
# Single-node KRaft broker. KAFKA_ADVERTISED (host:port) is the address clients are sent to: the
# Service's ClusterIP (the local cluster has no DNS). Data lives on the mounted /var/lib/kafka.
set -eu
conf=/tmp/server.properties
cat > "$conf" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://${KAFKA_ADVERTISED}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=/var/lib/kafka/data
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
CONF
cp="/opt/kafka/lib/*"
java -Xmx256m -cp "$cp" kafka.tools.StorageTool format --config "$conf" \
  --cluster-id "${KAFKA_CLUSTER_ID:-Xh8MKp1rS46hw38tTmqLkA}" --ignore-formatted >/dev/null
exec java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
  -Djava.awt.headless=true -cp "$cp" kafka.Kafka "$conf"
