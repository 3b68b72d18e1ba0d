// Opening a storage backend from a URL.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "eventq/options.h"
#include "eventq/storage.h"

namespace eventq::detail {

/// sqlite:PATH, sqlite://PATH, postgresql://..., postgres://..., or a libpq "key=value" string.
/// Throws eventq::error(invalid_url) naming the accepted forms.
std::unique_ptr<storage> open_storage(std::string_view url, const options& opts);

/// The URL with any password replaced by "***", for messages and logs.
std::string redact_url(std::string_view url);

#ifdef EVENTQ_HAVE_POSTGRES
std::unique_ptr<storage> open_postgres(std::string_view conninfo, const options& opts);
#endif

}  // namespace eventq::detail
