#!/usr/bin/env bash
# Runs every skbstat test, as CI does. Run it as root on Debian: it installs
# the Debian packages the tests use, then the whole Go test suite (BPF
# programs in the kernel, network namespaces, the VM kernel matrix), then
# short fuzz runs of the filter.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installed here, once, rather than by the test packages that use them:
# go test runs packages in parallel, and two apt-get runs would collide.
need=()
for tool in ip:iproute2 bpftool:bpftool bpftrace:bpftrace setpriv:util-linux ethtool:ethtool \
	qemu-system-x86_64:qemu-system-x86 qemu-system-aarch64:qemu-system-arm qemu-system-mipsel:qemu-system-mips \
	qemu-system-s390x:qemu-system-misc xz:xz-utils zstd:zstd jq:jq \
	prometheus:prometheus promtool:prometheus prometheus-node-exporter:prometheus-node-exporter strace:strace; do
	command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

go vet ./...
go test -count=1 -timeout 45m ./...
# The end-to-end exact-count scenarios once more, on a layout calibrated at
# start instead of read from the kernel's BTF.
SKBSTAT_E2E_LAYOUT=calibrate go test -count=1 -timeout 10m \
	-run 'TestFilterOptions|TestDropStack|TestSections|TestIntervals|TestCount|TestCleanup|TestDropsMatchBpftrace|TestNoFunctionTracing|TestVLAN' ./test/e2e
go test -count=1 -run '^$' -fuzz '^FuzzParse$' -fuzztime 15s ./filter
go test -count=1 -run '^$' -fuzz '^FuzzDifferential$' -fuzztime 30s ./filter
