#!/usr/bin/env bash
# Builds the addon with AddressSanitizer + UndefinedBehaviorSanitizer into
# build/asan/ (the regular build in build/Release is left alone). Used by
# `npm run test:asan`, which points the loader at it through GL_ADDON.
set -euo pipefail
cd "$(dirname "$0")/.."
node_include="$(dirname "$(dirname "$(command -v node)")")/include/node"
napi_include="$(node -p "require('node-addon-api').include_dir")"
mkdir -p build/asan
g++ -std=c++17 -shared -fPIC -O1 -g -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED \
  -I"$node_include" -I"$napi_include" \
  native/*.cpp \
  -o build/asan/geometric_ledger.node
