#!/bin/sh
# Entrypoint of drillbook/moto-s3: moto's S3 server on port 5000, as an
# unprivileged user. Werkzeug logs " * Running on ..." to stderr when ready.
set -eu
exec setpriv --reuid=moto --regid=moto --init-groups /opt/moto/bin/moto_server -H 0.0.0.0 -p 5000 "$@"
