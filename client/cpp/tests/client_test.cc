// Tests of the iadb C++ client against a running server with a SQLite default
// database (`cargo run -p iadb-server`, or the test server of the Rust
// integration test): IADB_ADDR=127.0.0.1:50051 ./build/bin/client_test
//
// Plain checks, no framework: each test is a function; a failed CHECK throws,
// the runner reports it and goes on. The last line is "N passed, M failed";
// the exit code is non-zero when any test failed.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "iadb_client.h"

namespace {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::ostringstream msg_;                                             \
      msg_ << __FILE__ << ":" << __LINE__ << ": CHECK(" #cond ") failed";  \
      throw Failure(msg_.str());                                           \
    }                                                                      \
  } while (0)

#define CHECK_EQ(a, b)                                                     \
  do {                                                                     \
    const auto& a_ = (a);                                                  \
    const auto& b_ = (b);                                                  \
    if (!(a_ == b_)) {                                                     \
      std::ostringstream msg_;                                             \
      msg_ << __FILE__ << ":" << __LINE__ << ": CHECK_EQ(" #a ", " #b      \
           << ") failed: " << Show(a_) << " != " << Show(b_);              \
      throw Failure(msg_.str());                                           \
    }                                                                      \
  } while (0)

// The code of the iadb::Error that `body` throws; a failure if it throws none.
#define CHECK_CODE(body, want)                                             \
  do {                                                                     \
    bool thrown_ = false;                                                  \
    try {                                                                  \
      body;                                                                \
    } catch (const iadb::Error& e_) {                                      \
      thrown_ = true;                                                      \
      if (e_.code() != (want)) {                                           \
        std::ostringstream msg_;                                           \
        msg_ << __FILE__ << ":" << __LINE__ << ": " #body " threw "        \
             << e_.what() << ", want " << iadb::StatusCodeName(want);      \
        throw Failure(msg_.str());                                         \
      }                                                                    \
    }                                                                      \
    if (!thrown_) {                                                        \
      throw Failure(std::string(__FILE__) + ":" +                          \
                    std::to_string(__LINE__) + ": " #body " threw nothing, " \
                    "want " + iadb::StatusCodeName(want));                 \
    }                                                                      \
  } while (0)

std::string Show(const iadb::Value& v) {
  return std::string(iadb::KindName(v)) + " " + iadb::ToString(v);
}
std::string Show(const std::string& s) { return "'" + s + "'"; }
std::string Show(iadb::ServingStatus s) { return iadb::ServingStatusName(s); }
std::string Show(grpc::StatusCode c) { return iadb::StatusCodeName(c); }
template <class T>
std::string Show(const T& v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string Address() {
  const char* env = std::getenv("IADB_ADDR");
  return env != nullptr && *env != '\0' ? env : "127.0.0.1:50051";
}

iadb::Client Connect(const std::string& database = "") {
  iadb::Client client(Address(), database);
  client.set_timeout(std::chrono::seconds(30));
  return client;
}

// A table name no other run uses.
std::string UniqueTable(const std::string& base) {
  static int next = 0;
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return "cpp_" + base + "_" + std::to_string(getpid()) + "_" +
         std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(now).count()) +
         "_" + std::to_string(next++);
}

// `SELECT ?` with one parameter: the value the server sends back.
iadb::Value Echo(iadb::Client& db, const iadb::Value& v) {
  std::optional<iadb::Row> row = db.FetchOne("SELECT ? AS v", {v});
  CHECK(row.has_value());
  CHECK_EQ(row->size(), std::size_t{1});
  return (*row)["v"];
}

// ------------------------------------------------------------------ tests

void TestValueRoundTrip() {
  iadb::Client db = Connect();
  const std::int64_t big = std::numeric_limits<std::int64_t>::max();
  const std::int64_t small = std::numeric_limits<std::int64_t>::min();
  CHECK_EQ(Echo(db, 42), iadb::Value(std::int64_t{42}));
  CHECK_EQ(Echo(db, big), iadb::Value(big));     // not through a double
  CHECK_EQ(Echo(db, small), iadb::Value(small));
  CHECK_EQ(Echo(db, 0.1), iadb::Value(0.1));     // the same bits
  CHECK_EQ(Echo(db, -2.5e300), iadb::Value(-2.5e300));
  const iadb::Value inf = Echo(db, std::numeric_limits<double>::infinity());
  CHECK(std::holds_alternative<double>(inf) && std::isinf(std::get<double>(inf)));
  CHECK_EQ(Echo(db, "héllo, wörld ✓"), iadb::Value("héllo, wörld ✓"));
  CHECK_EQ(Echo(db, ""), iadb::Value(""));  // empty text is not NULL
  const iadb::Bytes bytes{0x00, 0x01, 0x7f, 0x80, 0xff, 0x00};
  CHECK_EQ(Echo(db, bytes), iadb::Value(bytes));
  CHECK_EQ(Echo(db, iadb::Bytes{}), iadb::Value(iadb::Bytes{}));
  CHECK_EQ(Echo(db, nullptr), iadb::Value(nullptr));
  CHECK_EQ(Echo(db, iadb::Value{}), iadb::Value(nullptr));
  // SQLite has no bool type: a bool passed to `SELECT ?` comes back as 1/0.
  CHECK_EQ(Echo(db, true), iadb::Value(std::int64_t{1}));
  CHECK_EQ(Echo(db, false), iadb::Value(std::int64_t{0}));
}

void TestTypedColumns() {
  iadb::Client db = Connect();
  const std::string t = UniqueTable("typed");
  db.Execute("CREATE TABLE " + t +
             " (id INTEGER PRIMARY KEY, flag BOOLEAN, day DATE, at TIME, "
             "price TEXT, note TEXT, data BLOB, score REAL)");
  CHECK_EQ(db.Execute("INSERT INTO " + t +
                          " (flag, day, at, price, note, data, score) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)",
                      {true, iadb::Date{"2024-02-29"}, iadb::Time{"23:59:58"},
                       iadb::Decimal{"12345678901234567890.123456789"},
                       iadb::Json{"{\"a\": [1, 2]}"}, iadb::Bytes{1, 2, 3},
                       9.5}),
           std::uint64_t{1});
  CHECK_EQ(db.Execute("INSERT INTO " + t + " (flag) VALUES (?)", {false}),
           std::uint64_t{1});
  std::vector<iadb::Row> rows;
  const iadb::Summary s = db.FetchAll(
      "SELECT flag, day, at, price, note, data, score FROM " + t + " ORDER BY id",
      {}, [&](const iadb::Row& r) { rows.push_back(r); });
  CHECK_EQ(s.row_count, std::uint64_t{2});
  CHECK_EQ(rows.size(), std::size_t{2});
  CHECK_EQ(s.columns.size(), std::size_t{7});
  CHECK_EQ(s.columns[0].name, std::string("flag"));
  CHECK_EQ(s.columns[0].declared_type, std::string("BOOLEAN"));
  const iadb::Row& r = rows[0];
  CHECK_EQ(r["flag"], iadb::Value(true));  // a BOOLEAN column reads as bool
  CHECK_EQ(r["day"], iadb::Value(iadb::Date{"2024-02-29"}));
  CHECK_EQ(r["at"], iadb::Value(iadb::Time{"23:59:58"}));
  // SQLite keeps exact decimals only in TEXT columns, where they read as text.
  CHECK_EQ(r["price"], iadb::Value("12345678901234567890.123456789"));
  CHECK_EQ(r["note"], iadb::Value("{\"a\": [1, 2]}"));  // JSON reads as text
  CHECK_EQ(r["data"], iadb::Value(iadb::Bytes{1, 2, 3}));
  CHECK_EQ(r["score"], iadb::Value(9.5));
  CHECK_EQ(rows[1]["flag"], iadb::Value(false));
  CHECK_EQ(rows[1]["day"], iadb::Value(nullptr));
  CHECK_EQ(rows[1][6], iadb::Value(nullptr));
  db.Execute("DROP TABLE " + t);
}

void TestExecuteRowCounts() {
  iadb::Client db = Connect();
  const std::string t = UniqueTable("counts");
  CHECK(!db.TableExists(t));
  CHECK_EQ(db.Execute("CREATE TABLE " + t + " (id INTEGER PRIMARY KEY, name TEXT)"),
           std::uint64_t{0});
  CHECK(db.TableExists(t));
  for (const char* name : {"ada", "grace", "edsger"}) {
    CHECK_EQ(db.Execute("INSERT INTO " + t + " (name) VALUES (?)", {name}),
             std::uint64_t{1});
  }
  CHECK_EQ(db.Execute("UPDATE " + t + " SET name = upper(name) WHERE id > ?", {1}),
           std::uint64_t{2});
  std::optional<iadb::Row> n = db.FetchOne("SELECT COUNT(*) AS n FROM " + t);
  CHECK(n.has_value());
  CHECK_EQ((*n)["n"], iadb::Value(std::int64_t{3}));
  std::optional<iadb::Row> g = db.FetchOne("SELECT name FROM " + t + " WHERE id = ?", {2});
  CHECK(g.has_value());
  CHECK_EQ((*g)["name"], iadb::Value("GRACE"));
  CHECK_EQ(db.Execute("DELETE FROM " + t + " WHERE name = ?", {"nobody"}),
           std::uint64_t{0});
  CHECK_EQ(db.Execute("DELETE FROM " + t), std::uint64_t{3});
  db.Execute("DROP TABLE " + t);
  CHECK(!db.TableExists(t));
}

void TestFetchOne() {
  iadb::Client db = Connect();
  CHECK(!db.FetchOne("SELECT 1 AS one WHERE 1 = ?", {2}).has_value());
  std::optional<iadb::Row> row = db.FetchOne("SELECT 1 AS one, ? AS two", {"2"});
  CHECK(row.has_value());
  CHECK_EQ(row->size(), std::size_t{2});
  CHECK_EQ(row->columns()[0].name, std::string("one"));
  CHECK_EQ((*row)[0], iadb::Value(std::int64_t{1}));
  CHECK_EQ((*row)["two"], iadb::Value("2"));
  bool out_of_range = false;
  try {
    (void)(*row)["three"];
  } catch (const std::out_of_range&) {
    out_of_range = true;
  }
  CHECK(out_of_range);
  // Only the first row of a longer result.
  std::optional<iadb::Row> first = db.FetchOne(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
      "SELECT i FROM n");
  CHECK(first.has_value());
  CHECK_EQ((*first)["i"], iadb::Value(std::int64_t{1}));
}

void TestTableExists() {
  iadb::Client db = Connect();
  const std::string t = UniqueTable("exists");
  CHECK(!db.TableExists(t));
  db.Execute("CREATE TABLE " + t + " (x INTEGER)");
  CHECK(db.TableExists(t));
  db.Execute("DROP TABLE " + t);
  CHECK(!db.TableExists(t));
}

void TestFetchAllStream() {
  iadb::Client db = Connect();
  // An empty result still has its header.
  std::int64_t calls = 0;
  iadb::Summary empty = db.FetchAll("SELECT 1 AS a, 'x' AS b WHERE 0", {},
                                    [&](const iadb::Row&) { ++calls; });
  CHECK_EQ(calls, std::int64_t{0});
  CHECK_EQ(empty.row_count, std::uint64_t{0});
  CHECK_EQ(empty.columns.size(), std::size_t{2});
  CHECK_EQ(empty.columns[1].name, std::string("b"));
  // Several batches (at most 1024 rows each), in order.
  std::int64_t next = 1;
  bool in_order = true;
  iadb::Summary s = db.FetchAll(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
      "SELECT i FROM n",
      {5000}, [&](const iadb::Row& r) {
        in_order = in_order && std::get<std::int64_t>(r[0]) == next;
        ++next;
      });
  CHECK(in_order);
  CHECK_EQ(next, std::int64_t{5001});
  CHECK_EQ(s.row_count, std::uint64_t{5000});
  // An exception from the callback stops the stream and reaches the caller;
  // the client stays usable.
  std::int64_t seen = 0;
  bool stopped = false;
  try {
    db.FetchAll(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "SELECT i FROM n",
        {1000000}, [&](const iadb::Row&) {
          if (++seen == 10) throw std::runtime_error("enough");
        });
  } catch (const std::runtime_error& e) {
    stopped = std::string(e.what()) == "enough";
  }
  CHECK(stopped);
  CHECK_EQ(seen, std::int64_t{10});
  CHECK_EQ(Echo(db, 7), iadb::Value(std::int64_t{7}));
}

void TestErrors() {
  iadb::Client db = Connect();
  CHECK_CODE(db.FetchAll("SELEC 1", {}, [](const iadb::Row&) {}),
             grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_CODE(db.Execute("INSERT INTO no_such_table_cpp VALUES (1)"),
             grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_CODE(db.FetchOne("SELECT ?, ?", {1}), grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_CODE(db.FetchOne("SELECT ?", {std::nan("")}),
             grpc::StatusCode::INVALID_ARGUMENT);  // SQLite would store NULL
  const std::string t = UniqueTable("unique");
  db.Execute("CREATE TABLE " + t + " (id INTEGER PRIMARY KEY)");
  db.Execute("INSERT INTO " + t + " VALUES (?)", {1});
  CHECK_CODE(db.Execute("INSERT INTO " + t + " VALUES (?)", {1}),
             grpc::StatusCode::ALREADY_EXISTS);
  db.Execute("DROP TABLE " + t);
  // The error carries the server's message and the engine's code.
  try {
    db.Execute("SELEC 1");
    CHECK(false);
  } catch (const iadb::Error& e) {
    CHECK_EQ(e.code(), grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(e.message().find("syntax error") != std::string::npos);
    CHECK(std::string(e.what()).rfind("INVALID_ARGUMENT: ", 0) == 0);
    CHECK_EQ(e.sqlstate(), std::string("1"));  // SQLITE_ERROR
  }
  iadb::Client unknown = Connect("no_such_database");
  CHECK_CODE(unknown.Execute("SELECT 1"), grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_CODE(db.StandardHealth("no_such_database"), grpc::StatusCode::NOT_FOUND);
}

void TestHealth() {
  iadb::Client db = Connect();
  CHECK_EQ(db.StandardHealth(""), iadb::ServingStatus::kServing);
}

void TestUnreachable() {
  // Nothing listens on port 1 of the loopback address.
  iadb::Client none("127.0.0.1:1");
  none.set_timeout(std::chrono::seconds(10));
  CHECK_CODE(none.TableExists("t"), grpc::StatusCode::UNAVAILABLE);
}

// ------------------------------------------------ against the fake server
// IADB_FAKE_ADDR is a fake server that misbehaves on purpose
// (tests/src/fake_server.rs): `truncate N` ends a stream after N rows
// without its summary, `hang` never answers, `unavailable TAG` counts the
// call and answers UNAVAILABLE, FetchOne `count METHOD TAG` reads a count.

std::optional<iadb::Client> Fake() {
  const char* env = std::getenv("IADB_FAKE_ADDR");
  if (env == nullptr || *env == '\0') {
    std::printf("  (skipped: IADB_FAKE_ADDR is not set)\n");
    return std::nullopt;
  }
  iadb::Client client(env);
  client.set_timeout(std::chrono::seconds(30));
  return client;
}

std::int64_t Count(iadb::Client& db, const std::string& key) {
  std::optional<iadb::Row> row = db.FetchOne("count " + key);
  CHECK(row.has_value());
  const iadb::Value& n = (*row)[std::string_view("n")];
  CHECK(std::holds_alternative<std::int64_t>(n));
  return std::get<std::int64_t>(n);
}

// Case 2: a stream cut short is an error, after the rows that arrived.
void TestStreamWithoutSummary() {
  std::optional<iadb::Client> db = Fake();
  if (!db) return;
  std::uint64_t seen = 0;
  const auto on_row = [&seen](const iadb::Row&) { ++seen; };
  CHECK_EQ(db->FetchAll("rows 250", {}, on_row).row_count, std::uint64_t{250});
  seen = 0;
  try {
    db->FetchAll("truncate 250", {}, on_row);
    CHECK(false);
  } catch (const iadb::Error& e) {
    CHECK_EQ(e.code(), grpc::StatusCode::INTERNAL);
    CHECK(e.message().find("without a summary") != std::string::npos);
  }
  CHECK_EQ(seen, std::uint64_t{250});
  CHECK_CODE(db->FetchAll("miscount 3", {}, on_row), grpc::StatusCode::INTERNAL);
  CHECK_CODE(db->FetchAll("batch-first", {}, on_row), grpc::StatusCode::INTERNAL);
}

// Case 7: only the client's deadline can end these calls (the fake never
// answers), and it is DEADLINE_EXCEEDED every time.
void TestOwnDeadline() {
  std::optional<iadb::Client> db = Fake();
  if (!db) return;
  db->set_timeout(std::chrono::milliseconds(200));
  for (int i = 0; i < 5; ++i) {
    CHECK_CODE(db->Execute("hang"), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  CHECK_CODE(db->FetchOne("hang"), grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK_CODE(db->FetchAll("header-then-hang", {}, [](const iadb::Row&) {}),
             grpc::StatusCode::DEADLINE_EXCEEDED);
}

// Case 8: the client does not send a write again after UNAVAILABLE.
void TestUnavailableWriteSentOnce() {
  std::optional<iadb::Client> db = Fake();
  if (!db) return;
  CHECK_CODE(db->Execute("unavailable cpp-w1"), grpc::StatusCode::UNAVAILABLE);
  CHECK_EQ(Count(*db, "Execute cpp-w1"), std::int64_t{1});
}

}  // namespace

int main() {
  const std::vector<std::pair<const char*, std::function<void()>>> tests = {
      {"value_round_trip", TestValueRoundTrip},
      {"typed_columns", TestTypedColumns},
      {"execute_row_counts", TestExecuteRowCounts},
      {"fetch_one", TestFetchOne},
      {"table_exists", TestTableExists},
      {"fetch_all_stream", TestFetchAllStream},
      {"errors", TestErrors},
      {"health", TestHealth},
      {"unreachable", TestUnreachable},
      {"stream_without_summary", TestStreamWithoutSummary},
      {"own_deadline", TestOwnDeadline},
      {"unavailable_write_sent_once", TestUnavailableWriteSentOnce},
  };
  std::printf("iadb C++ client tests against %s\n", Address().c_str());
  int passed = 0;
  int failed = 0;
  for (const auto& [name, test] : tests) {
    try {
      test();
      ++passed;
      std::printf("ok   %s\n", name);
    } catch (const std::exception& e) {
      ++failed;
      std::printf("FAIL %s: %s\n", name, e.what());
    }
    std::fflush(stdout);
  }
  std::printf("client_test: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
