// strata: the command-line front end over libstrata.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"Strata: run LLMs larger than memory, streaming weights from SSD"};
  app.require_subcommand(1);
  strata::app::add_run_command(app);
  strata::app::add_chat_command(app);
  strata::app::add_inspect_command(app);
  strata::app::add_forge_command(app);
  strata::app::add_bench_command(app);
  strata::app::add_tokenize_command(app);
  strata::app::add_logits_command(app);
  strata::app::add_perplexity_command(app);
  strata::app::add_template_command(app);
  strata::app::add_serve_command(app);
  strata::app::add_list_command(app);
  strata::app::add_ps_command(app);
  strata::app::add_pull_command(app);
  strata::app::add_iobench_command(app);
  strata::app::add_plan_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints help (exit 0) or its message; a usage error exits 2 (as getopt tools do), not
    // with CLI11's internal code (105, 106, ...).
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const strata::Error& e) {
    std::fflush(stdout);
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
