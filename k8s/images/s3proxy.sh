#!/bin/sh
# S3Proxy on :9000 with its filesystem backend on the mounted /var/lib/s3proxy; the credentials come
# from S3_ACCESS_KEY / S3_SECRET_KEY (a Secret).
set -eu
conf=/tmp/s3proxy.properties
umask 077
cat > "$conf" <<CONF
s3proxy.endpoint=http://0.0.0.0:9000
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=${S3_ACCESS_KEY}
s3proxy.credential=${S3_SECRET_KEY}
jclouds.provider=filesystem
jclouds.filesystem.basedir=/var/lib/s3proxy
CONF
exec java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
  -cp "/opt/s3proxy/lib/*" org.gaul.s3proxy.Main --properties "$conf"
