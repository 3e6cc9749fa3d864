#!/usr/bin/env bash
# Runs every skbstat test, as CI does. Run it as root on Debian: it installs
# the Debian packages the tests use, then the whole Go test suite (BPF
# programs in the kernel, network namespaces, the VM kernel matrix), then
# short fuzz runs of the filter.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in ip:iproute2 bpftool:bpftool bpftrace:bpftrace; do
	command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

go vet ./...
go test -count=1 -timeout 45m ./...
go test -count=1 -run '^$' -fuzz '^FuzzParse$' -fuzztime 15s ./filter
go test -count=1 -run '^$' -fuzz '^FuzzDifferential$' -fuzztime 30s ./filter
