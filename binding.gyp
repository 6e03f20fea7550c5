{
  "targets": [
    {
      "target_name": "geometric_ledger",
      "sources": [
        "native/addon.cpp",
        "native/core.cpp",
        "native/shard.cpp",
        "native/lock.cpp",
        "native/log_writer.cpp",
        "native/log_reader.cpp",
        "native/syncer.cpp",
        "native/checkpointer.cpp",
        "native/io.cpp",
        "native/crc32c.cpp"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
