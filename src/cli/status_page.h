// The status page of `eventq serve`: one self-contained HTML document (no scripts, no external
// assets), every value from the database escaped.
#pragma once

#include <string>
#include <string_view>

#include "eventq/status.h"

namespace eventq::cli {

/// Text made safe inside HTML elements and attribute values (& < > " ').
std::string html_escape(std::string_view text);

/// The page for `status`; it reloads itself every `refresh_seconds` (0: never).
std::string render_status_page(const farm_status& status, int refresh_seconds);

}  // namespace eventq::cli
