# Turns migrations/<backend>/NNNN_name.sql into a C++ source that holds them as string literals,
# so that the installed library applies its migrations without the source tree.
# Inputs: BACKEND, SOURCE_DIR (the migrations/<backend> folder), OUTPUT (the .cpp to write).
file(GLOB files "${SOURCE_DIR}/*.sql")
list(SORT files)
set(body "")
foreach(f IN LISTS files)
  get_filename_component(name "${f}" NAME_WE)
  string(REGEX MATCH "^[0-9]+" version "${name}")
  if(NOT version)
    message(FATAL_ERROR "migration file name must start with its number: ${f}")
  endif()
  math(EXPR version "${version}")
  file(READ "${f}" sql)
  string(APPEND body "    {${version}, \"${name}\", R\"eventq_sql(${sql})eventq_sql\"},\n")
endforeach()
if(body STREQUAL "")
  set(table "  return {};\n")
else()
  set(table "  static const migration all[] = {\n${body}  };\n  return all;\n")
endif()
file(WRITE "${OUTPUT}.tmp"
"// Generated from migrations/${BACKEND}/ by cmake/embed_migrations.cmake. Do not edit.\n"
"#include \"migrations.h\"\n\n"
"namespace eventq::detail {\n\n"
"std::span<const migration> ${BACKEND}_migrations() {\n"
"${table}"
"}\n\n"
"}  // namespace eventq::detail\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
