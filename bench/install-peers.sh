#!/usr/bin/env bash
# Installs the peers the cluster benchmark measures Skiff against (issue #7): etcd 3.4.x from Debian.
# DotNext.Net.Cluster comes from NuGet through bench/peers/dotnext and needs nothing here.
# Also a font (fonts-dejavu-core): the harness draws its PNG charts with ScottPlot, whose text needs one.
# Idempotent; run as root (CI and the developer machines are root).
set -euo pipefail

if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1 && [ -d /usr/share/fonts/truetype/dejavu ]; then
  echo "etcd already installed: $(etcd --version 2>/dev/null | head -n1)"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# The package ships a service for one node on 127.0.0.1:2379. It must not start: it would hold the ports the
# benchmark's members use. policy-rc.d answering 101 tells invoke-rc.d (and so the postinst) not to start services.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  made_policy=1
fi
cleanup() { if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update
apt-get install -y --no-install-recommends etcd-server etcd-client fonts-dejavu-core

# In case something started it anyway (an init system that ignores policy-rc.d), stop the packaged service.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi
etcd --version | head -n1
