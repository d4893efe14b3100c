#pragma once
// Structured output: a character-level acceptor for JSON, optionally constrained by a JSON
// schema, and the TokenConstraint that masks tokens whose text it would reject.
//
// Schemas supported: type object (properties, emitted in the schema's order, all of them and
// only them; without properties, free keys with additionalProperties as the values' schema or
// false for {}, minProperties, maxProperties), array (items, minItems, maxItems), string
// (minLength, maxLength, pattern, and format date, time, date-time, uuid, email, ipv4), number and
// integer (minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf an integer or a power
// of ten), boolean, null, enum, const, type lists, anyOf/oneOf (chosen by a value's first
// character), allOf (merged), $ref into #/$defs or #/definitions. Keywords that constrain values
// in ways the grammar cannot follow (not, if/then/else, contains, uniqueItems,
// patternProperties, tuples, ...) make the schema refused with strata::Error naming the keyword,
// never silently ignored. Whitespace between tokens is limited (one space, or a newline and
// kMaxWhitespace indents) so a model cannot pad forever.
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/generate.h"

namespace strata {

struct SchemaNode;

class JsonAcceptor {
 public:
  static constexpr int kMaxWhitespace = 20;
  static constexpr int kMaxNumberDigits = 20;
  // Schema nodes after "$ref" expansion: a small schema whose parts all refer back to the root
  // would otherwise expand without end (each level multiplies the nodes).
  static constexpr size_t kMaxSchemaNodes = 20000;

  // Any JSON object (Ollama's format: "json").
  JsonAcceptor();
  // A value matching schema. Throws strata::Error for a schema that is not an object.
  explicit JsonAcceptor(const nlohmann::ordered_json& schema);
  ~JsonAcceptor();
  JsonAcceptor(const JsonAcceptor&);
  JsonAcceptor(JsonAcceptor&&) noexcept;
  JsonAcceptor& operator=(const JsonAcceptor&);
  JsonAcceptor& operator=(JsonAcceptor&&) noexcept;

  // Feeds one byte; false (state unspecified) when it cannot continue a valid value.
  bool feed(char c);
  bool feed(const std::string& text);
  // The value is complete: nothing more may follow.
  bool complete() const { return stack_.empty(); }

  struct Frame;

 private:
  std::shared_ptr<const std::vector<std::unique_ptr<SchemaNode>>> nodes_;  // shared by copies
  std::vector<Frame> stack_;
};

// Masks tokens for generate(): a token is allowed while an acceptor takes all of its text.
// Several acceptors are alternatives followed side by side (the output must be a value one of
// them accepts): a union the single acceptor's anyOf cannot follow, as when each alternative is
// an object told apart only by a later property (a call to one of several tools).
class JsonConstraint final : public TokenConstraint {
 public:
  JsonConstraint(const Tokenizer& tokenizer, JsonAcceptor acceptor);
  JsonConstraint(const Tokenizer& tokenizer, std::vector<JsonAcceptor> alternatives);  // at least one
  bool allows(Token token) override;
  void accept(Token token) override;
  bool complete() const override;

 private:
  const std::string& piece(Token token);
  const Tokenizer& tokenizer_;
  std::vector<JsonAcceptor> alive_;  // the alternatives that took all of the output so far
  std::vector<std::string> pieces_;
  std::vector<bool> have_piece_;
};

}  // namespace strata
