// The command-line flags every client of the broker shares (carebrokerctl,
// carebroker-audit): where the broker is, the mutual-TLS files, the
// deadline, each defaulting from the environment so that a shell profile
// or a service unit can set them once.
//
//   --target  CAREBROKER_TARGET  host:port
//   --cert    CAREBROKER_CERT    client certificate (PEM)
//   --key     CAREBROKER_KEY     its private key (PEM)
//   --ca      CAREBROKER_CA      CA that signed the broker's certificate (PEM)
//   --timeout                    seconds for each request
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "broker/client/client.h"

namespace carebroker {

// The environment variable `name`, or `fallback` when it is unset or empty.
std::string EnvOr(const char* name, const std::string& fallback = "");

// Adds --target, --cert, --key and --ca to `app`, filling `tls` from the
// environment first (the target falls back to `default_target`).
// `certificate` says whose certificate it is, for --help.
void AddTlsFlags(CLI::App& app, ClientTls& tls, absl::string_view certificate,
                 const std::string& default_target = "");

// Adds --timeout (positive seconds) to `app`.
void AddTimeoutFlag(CLI::App& app, double& seconds, absl::string_view what);

// OK when the TLS files are all named, else INVALID_ARGUMENT naming the
// flags and variables to set.
absl::Status RequireTls(const ClientTls& tls);

}  // namespace carebroker
