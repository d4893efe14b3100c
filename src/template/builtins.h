#pragma once
// Jinja2's filters, tests and globals, and the Python methods templates call on str/dict/list.
#include <string>

#include "template/value.h"

namespace strata::jinja {

class Renderer;

// Each throws strata::Error (without location; the caller adds the template line) on unknown
// names, bad arguments, or operations Python would reject.
Value apply_filter(Renderer& r, const std::string& name, const Value& subject, CallArgs& args);
bool apply_test(Renderer& r, const std::string& name, const Value& subject, CallArgs& args);
// `subject.name` as jinja2's getattr does it: a Python attribute (bound method) first, then an item.
Value get_attribute(const Value& subject, const std::string& name);
// `subject[key]` as jinja2's getitem does it: the item first, then an attribute.
Value get_item(const Value& subject, const Value& key);
Value make_globals();  // range, namespace, dict, raise_exception, strftime_now
bool has_filter(const std::string& name);
bool has_test(const std::string& name);

// `a + b` of two strings: a Markup on either side escapes the other, and the sum is Markup.
Value add_strings(const Value& a, const Value& b);

// Python's `item in container`.
bool contains(const Value& container, const Value& item);
// Python str methods (strip, split, ...) used by the template methods and filters.
std::string py_strip(const std::string& s, const Value& chars, bool left, bool right);

}  // namespace strata::jinja
