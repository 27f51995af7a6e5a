#!/bin/bash
# The health check's command: exit 0 once the broker answers a metadata request.
# Usage as the official tool's: --bootstrap-server host:port
exec java -cp '/opt/kafka/libs/*:/opt/kafka/ready' Ready "$2" 10 >/dev/null 2>&1
