#include <CLI/CLI.hpp>

#include "broker/cli/ctl/commands.h"
#include "broker/store/offline.h"

namespace carebroker::ctl {
namespace {

// Applies the store's schema migrations: PostgreSQL by its connection
// string, SQLite by opening the file (which migrates it). Exit 1 when the
// store cannot be reached or is newer than this build.
int DoDbMigrate(const std::string& store, std::ostream& out, std::ostream& err) {
  auto done = MigrateStore(store);
  if (!done.ok()) {
    err << "carebrokerctl: " << done.status().message() << "\n";
    return 1;
  }
  out << *done << "\n";
  return 0;
}

}  // namespace

void AddDbCommands(CLI::App& app, Run& run) {
  auto store = std::make_shared<std::string>();
  auto* db = app.add_subcommand("db", "the broker's store");
  db->require_subcommand(1);
  auto* migrate = db->add_subcommand("migrate", "bring the store's schema to this build's version (offline)");
  migrate->add_option("--store", *store, "the SQLite file, or a PostgreSQL connection string (postgresql://...)")
      ->required();
  migrate->callback([&run, store] { run.Offline([&run, store] { return DoDbMigrate(*store, run.out, run.err); }); });
}

}  // namespace carebroker::ctl
