#!/usr/bin/env bash
# Debian packages the live stack and its tests use: Prometheus (the real server),
# HAProxy (the balancer, driven through its runtime API) and kcat (an independent
# Kafka client for protocol tests), a C compiler (the embedded broker's fixed-port shim)
# and kubectl (kustomize renders k8s/ in the tests; kustomize v4+ is needed, which
# kubectl >= 1.21 has), and bubblewrap (the sandbox's namespaces; libseccomp2 comes with
# Debian). Installs only what is missing.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
ldconfig -p 2>/dev/null | grep -q libseccomp.so.2 || need+=(libseccomp2)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
