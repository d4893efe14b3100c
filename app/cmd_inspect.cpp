// `strata inspect MODEL [--all]`: prints a GGUF file's header, metadata and tensor table.
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "gguf/gguf.h"
#include "gguf/inspect.h"
#include "util/error.h"

namespace strata::app {

void add_inspect_command(CLI::App& app) {
  struct Options {
    std::string model;
    bool all = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("inspect", "Print a GGUF file's header, metadata and tensor table");
  cmd->add_option("MODEL", opt->model, "GGUF file")->required();
  cmd->add_flag("--all", opt->all, "Print long metadata arrays and strings in full");
  cmd->callback([opt] {
    try {
      auto file = gguf::File::open(opt->model);
      gguf::print_inspect(*file, std::cout, opt->all);
    } catch (const strata::Error& e) {
      std::cout.flush();
      std::cerr << "error: " << e.what() << "\n";
      throw CLI::RuntimeError(1);
    }
  });
}

}  // namespace strata::app
