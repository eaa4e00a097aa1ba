#!/usr/bin/env bash
# Installs the Debian packages Tandem's build, tests and lab need. Idempotent:
# it asks apt only for what is missing.
set -euo pipefail

pkgs=(clang llvm libbpf-dev bird2 ethtool iproute2 nftables tcpdump openssl iperf3 curl vsftpd)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: missing ${missing[*]}; run as root to install them" >&2
		exit 1
	fi
	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts bird.service on install where systemd runs; the lab runs its
# own BIRD processes in namespaces and needs no host daemon.
# Likewise vsftpd: tests run their own in namespaces.
for svc in bird vsftpd; do
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
		systemctl stop "$svc" || true
	fi
done
