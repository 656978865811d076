// Streams a large result from an iadb server and checks its health.
//
//   IADB_ADDR=127.0.0.1:50051 ./build/bin/stream
//
// 1. The standard grpc.health.v1 status of the server ("") and of its default
//    database ("default") must be SERVING.
// 2. A recursive query yields 200000 rows (i, 'row ' || i); the example counts
//    them, sums i and checks every label while the rows stream in.
// 3. Bad SQL must fail with INVALID_ARGUMENT.
// It prints one JSON line and exits 0, or exits 1 on any mismatch.
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "iadb_client.h"

namespace {

constexpr std::int64_t kRows = 200000;
constexpr const char* kQuery =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
    "SELECT i, 'row ' || i AS label FROM n";

std::vector<std::string> problems;

void Expect(bool ok, const std::string& what) {
  if (!ok) problems.push_back(what);
}

// The server reports a database's health after its first check, a moment
// after it starts listening: ask again (for at most 5 s) while the service is
// still unknown or not yet SERVING.
iadb::ServingStatus WaitServing(iadb::Client& client,
                                const std::string& service) {
  iadb::ServingStatus status = iadb::ServingStatus::kUnknown;
  for (int attempt = 0; attempt < 50; ++attempt) {
    try {
      status = client.StandardHealth(service);
      if (status == iadb::ServingStatus::kServing) break;
    } catch (const iadb::Error& e) {
      if (e.code() != grpc::StatusCode::NOT_FOUND) throw;
      status = iadb::ServingStatus::kServiceUnknown;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return status;
}

}  // namespace

int main() {
  const char* env = std::getenv("IADB_ADDR");
  const std::string address = env != nullptr && *env != '\0' ? env : "127.0.0.1:50051";
  try {
    iadb::Client client(address);  // the server's default database
    client.set_timeout(std::chrono::seconds(120));

    const iadb::ServingStatus server = WaitServing(client, "");
    const iadb::ServingStatus database = WaitServing(client, "default");
    Expect(server == iadb::ServingStatus::kServing,
           std::string("health of \"\" is ") + iadb::ServingStatusName(server));
    Expect(database == iadb::ServingStatus::kServing,
           std::string("health of \"default\" is ") +
               iadb::ServingStatusName(database));

    std::int64_t rows = 0;
    std::int64_t sum = 0;
    std::int64_t bad_labels = 0;
    const auto start = std::chrono::steady_clock::now();
    const iadb::Summary summary =
        client.FetchAll(kQuery, {kRows}, [&](const iadb::Row& row) {
          const std::int64_t i = std::get<std::int64_t>(row["i"]);
          const std::string& label = std::get<std::string>(row["label"]);
          ++rows;
          sum += i;
          if (label != "row " + std::to_string(i)) ++bad_labels;
        });
    const double elapsed_ms =
        std::chrono::duration<double, std::milli>(
            std::chrono::steady_clock::now() - start)
            .count();

    const std::int64_t want_sum = kRows * (kRows + 1) / 2;
    Expect(rows == kRows, "rows: got " + std::to_string(rows) + ", want " +
                              std::to_string(kRows));
    Expect(sum == want_sum, "sum: got " + std::to_string(sum) + ", want " +
                                std::to_string(want_sum));
    Expect(bad_labels == 0, std::to_string(bad_labels) + " wrong labels");
    Expect(summary.row_count == static_cast<std::uint64_t>(kRows),
           "summary row_count " + std::to_string(summary.row_count));
    Expect(summary.columns.size() == 2 && summary.columns[0].name == "i" &&
               summary.columns[1].name == "label",
           "columns are not (i, label)");

    std::string bad_sql = "no error";
    try {
      client.FetchAll("SELEC 1", {}, [](const iadb::Row&) {});
    } catch (const iadb::Error& e) {
      bad_sql = iadb::StatusCodeName(e.code());
    }
    Expect(bad_sql == "INVALID_ARGUMENT",
           "bad SQL: got " + bad_sql + ", want INVALID_ARGUMENT");

    struct rusage usage {};
    getrusage(RUSAGE_SELF, &usage);
    std::printf(
        "{\"rows\":%lld,\"sum\":%lld,\"elapsed_ms\":%.1f,\"max_rss_kib\":%ld,"
        "\"health\":{\"\":\"%s\",\"default\":\"%s\"},\"bad_sql\":\"%s\"}\n",
        static_cast<long long>(rows), static_cast<long long>(sum), elapsed_ms,
        usage.ru_maxrss, iadb::ServingStatusName(server),
        iadb::ServingStatusName(database), bad_sql.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stream: %s\n", e.what());
    return 1;
  }
  for (const std::string& p : problems) std::fprintf(stderr, "stream: %s\n", p.c_str());
  return problems.empty() ? 0 : 1;
}
