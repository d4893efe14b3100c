// The template engine's bounds (template/render.h, value.h, parser.h): hostile templates, as a
// client can store them through /api/create, end with an error naming the limit, quickly and
// without exhausting the stack or memory. Templates within the bounds render as before.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "template/parser.h"
#include "template/render.h"
#include "template/template.h"
#include "util/error.h"

namespace strata::jinja {
namespace {

// The error message a template's parse or render ends with ("" when it renders).
std::string failure(const std::string& src) {
  try {
    Template::parse(src).render(nlohmann::ordered_json::object());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_limit(const std::string& src, const std::string& names) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string message = failure(src);
  EXPECT_NE(message.find("limit"), std::string::npos) << message;
  EXPECT_NE(message.find(names), std::string::npos) << message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30)) << src.substr(0, 80);
}

TEST(TemplateLimits, MacroRecursionStopsAtTheCallDepth) {
  expect_limit("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}",
               "called more than " + std::to_string(kMaxCallDepth) + " deep");
  // Mutual recursion too, and through caller().
  expect_limit("{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}", "deep");
  // Recursion that ends within the bound is fine.
  EXPECT_EQ(Template::parse("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}")
                .render(nlohmann::ordered_json::object()),
            "54321");
}

TEST(TemplateLimits, NestedLoopsStopAtTheStepBudget) {
  expect_limit("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
               std::to_string(kMaxRenderSteps) + " steps");
}

TEST(TemplateLimits, StringsCannotGrowWithoutBound) {
  expect_limit("{{ 'x' * 10**11 }}", "string repetition");
  expect_limit("{{ 10**11 * 'ab' }}", "string repetition");
  expect_limit(
      "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
      "MiB");
  expect_limit(
      "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
      "MiB");
  expect_limit("{{ ['a', 'b', 'c']|join('y' * 60000000) }}", "join");
  expect_limit("{{ ('x' * 1000)|replace('x', 'y' * 1000000) }}", "replace");
  expect_limit("{{ 'abc'|center(10**12) }}", "center");
  expect_limit("{{ 'a\nb'|indent(10**12) }}", "indent");
}

TEST(TemplateLimits, ListsCannotGrowWithoutBound) {
  expect_limit("{{ range(10**12)|length }}", "range");
  expect_limit("{{ ([1] * 10**9)|length }}", "list repetition");
  expect_limit("{{ [[ 'x' * 1000000 ]] * 1000000 }}", "MiB");  // small until printed
  expect_limit(
      "{% set ns = namespace(l=['x' * 1000000]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
      "list concatenation");
}

TEST(TemplateLimits, OutputIsBounded) {
  // Each piece is small; together they pass the output bound before the step budget.
  expect_limit("{% set s = 'x' * 1000000 %}{% for i in range(1000) %}{{ s }}{% endfor %}", "output");
}

TEST(TemplateLimits, SelfContainingValuesStopAtTheWalkDepth) {
  expect_limit("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}", "nests more than");
  expect_limit("{% set ns = namespace(a=1) %}{% set ns.me = [ns] %}{{ ns.me }}", "nests more than");
  expect_limit("{% set ns = namespace(a=1) %}{% set ns.me = {'x': [ns]} %}{{ ns|string }}", "nests more than");
}

TEST(TemplateLimits, DeepNestingIsASyntaxErrorNotACrash) {
  const int n = 100000;
  for (const std::string& src :
       {"{{ " + std::string(n, '(') + "1" + std::string(n, ')') + " }}",
        "{{ " + std::string(n, '[') + std::string(n, ']') + " }}", "{{ " + std::string(n, '-') + "1 }}", [] {
          std::string s;
          for (int i = 0; i < 100000; ++i) s += "{% if x %}";
          return s;
        }()}) {
    const std::string message = failure(src);
    EXPECT_NE(message.find("nest more than " + std::to_string(kMaxParseDepth)), std::string::npos) << message;
  }
  // Ordinary nesting is untouched.
  EXPECT_EQ(Template::parse("{{ ((((1 + 2)))) * [[[3]]][0][0][0] }}").render(nlohmann::ordered_json::object()), "9");
}

TEST(TemplateLimits, DeepVariablesFromJsonRenderWithinTheBound) {
  nlohmann::ordered_json v = 1;
  for (int i = 0; i < 100; ++i) v = nlohmann::ordered_json::array({v});
  EXPECT_EQ(Template::parse("{{ x|tojson }}").render({{"x", v}}), std::string(100, '[') + "1" + std::string(100, ']'));
}

}  // namespace
}  // namespace strata::jinja
