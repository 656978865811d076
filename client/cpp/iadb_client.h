// iadb C++ client: a thin, blocking wrapper over the generated gRPC stubs of
// proto/iadb/v1/database.proto and of the standard grpc.health.v1 service.
//
// Every call either returns its result or throws iadb::Error, which carries
// the gRPC status code and the server's message. The generated protobuf types
// stay out of this header: only the standard library and grpc::StatusCode.
#ifndef IADB_CLIENT_H_
#define IADB_CLIENT_H_

#include <grpcpp/support/status_code_enum.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace grpc {
class Channel;
}  // namespace grpc

namespace iadb {

// ---------------------------------------------------------------- values

// BLOB / bytea / VARBINARY.
using Bytes = std::vector<std::uint8_t>;

// The wire's text-carried kinds keep their own C++ type, so that a decimal is
// never mistaken for text (and is bound back as a decimal). `text` holds the
// wire form, unchanged:
struct Decimal {      // exact digits, "12345678901234567890.123456789"
  std::string text;
};
struct Date {         // "YYYY-MM-DD"
  std::string text;
};
struct Time {         // "HH:MM:SS[.fffffffff]"
  std::string text;
};
struct DateTime {     // no zone, "YYYY-MM-DDTHH:MM:SS[.fffffffff]"
  std::string text;
};
struct TimestampTz {  // RFC 3339; the server returns it in UTC ("Z")
  std::string text;
};
struct Json {         // a JSON document as text
  std::string text;
};

bool operator==(const Decimal& a, const Decimal& b);
bool operator==(const Date& a, const Date& b);
bool operator==(const Time& a, const Time& b);
bool operator==(const DateTime& a, const DateTime& b);
bool operator==(const TimestampTz& a, const TimestampTz& b);
bool operator==(const Json& a, const Json& b);

// One iadb.v1.Value. The alternatives, in order (Value::index()):
//   0 nullptr_t  SQL NULL (also a Value with no kind set on the wire)
//   1 bool       2 int64_t     3 double (NaN and +-inf included)
//   4 std::string (UTF-8 text) 5 Bytes
//   6 Decimal  7 Date  8 Time  9 DateTime  10 TimestampTz  11 Json
// A default-constructed Value is NULL. `Value v = "abc"` is text,
// `Value v = 42` an int64, `Value v = 1.5` a double, `Value v = true` a bool.
using Value = std::variant<std::nullptr_t, bool, std::int64_t, double,
                           std::string, Bytes, Decimal, Date, Time, DateTime,
                           TimestampTz, Json>;

// The wire's name of a value's kind: "null", "bool", "int", "double", "text",
// "bytes", "decimal", "date", "time", "datetime", "timestamp_tz", "json".
const char* KindName(const Value& value);

// A readable rendering for logs and examples: NULL, true, 42, 1.5, 'text',
// x'00ff', decimal '1.50', date '2024-01-31', ...
std::string ToString(const Value& value);

// ---------------------------------------------------------------- errors

// The name of a status code as gRPC spells it ("INVALID_ARGUMENT").
const char* StatusCodeName(grpc::StatusCode code);

// Every failure of a call: the gRPC status of the server (or of the channel:
// UNAVAILABLE when nothing listens), or INTERNAL when a FetchAll stream breaks
// the protocol (frames out of order, a row count that does not add up).
class Error : public std::runtime_error {
 public:
  Error(grpc::StatusCode code, std::string message, std::string sqlstate = "");

  grpc::StatusCode code() const noexcept { return code_; }
  // The server's message, without the code (what() is "CODE: message").
  const std::string& message() const noexcept { return message_; }
  // The engine's SQLSTATE or error code from the `iadb-sqlstate` response
  // metadata; empty when the server sent none.
  const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  grpc::StatusCode code_;
  std::string message_;
  std::string sqlstate_;
};

// ---------------------------------------------------------------- results

// A result column, as the engine reports it.
struct Column {
  std::string name;           // may be empty or repeated
  std::string declared_type;  // "INTEGER", "int8", ...; empty when unknown
};

// One row: values in the order of the columns.
class Row {
 public:
  Row(std::shared_ptr<const std::vector<Column>> columns,
      std::vector<Value> values);

  std::size_t size() const noexcept { return values_.size(); }
  // By position; throws std::out_of_range past the end.
  const Value& operator[](std::size_t index) const;
  // By column name (the first column of that name); throws std::out_of_range
  // when no column has it.
  const Value& operator[](std::string_view name) const;
  const std::vector<Value>& values() const noexcept { return values_; }
  const std::vector<Column>& columns() const noexcept { return *columns_; }

 private:
  std::shared_ptr<const std::vector<Column>> columns_;
  std::vector<Value> values_;
};

// What a FetchAll stream ends with.
struct Summary {
  std::vector<Column> columns;
  std::uint64_t row_count = 0;      // rows received (checked against the server's count)
  std::uint64_t rows_affected = 0;  // rows changed, where the statement changed any
  double execution_time_ms = 0;     // time on the server
};

// The grpc.health.v1 serving status.
enum class ServingStatus {
  kUnknown = 0,
  kServing = 1,
  kNotServing = 2,
  kServiceUnknown = 3,
};

// "UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN".
const char* ServingStatusName(ServingStatus status);

using RowCallback = std::function<void(const Row&)>;

// ---------------------------------------------------------------- client

// A connection to one iadb server and one of its databases. Calls are
// blocking; one Client may be used from several threads at once.
class Client {
 public:
  // `address` is a gRPC target such as "127.0.0.1:50051" (plaintext).
  // `database` names one of the server's databases; "" is its default.
  explicit Client(const std::string& address, std::string database = "");
  // Over a channel made by the caller (TLS credentials, channel arguments).
  explicit Client(std::shared_ptr<grpc::Channel> channel,
                  std::string database = "");
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The deadline of every later call (the server also stops the query on
  // the engine when it passes: DEADLINE_EXCEEDED). Zero, the default, means
  // no deadline.
  void set_timeout(std::chrono::milliseconds timeout);

  // Runs one statement that returns no rows; returns the rows affected.
  std::uint64_t Execute(const std::string& sql,
                        const std::vector<Value>& params = {});

  // Streams a result: `on_row` is called for each row as its batch arrives,
  // so memory does not grow with the result. An exception thrown by `on_row`
  // cancels the stream (the server stops the query) and propagates. An
  // engine error after some rows throws Error after those rows were passed.
  Summary FetchAll(const std::string& sql, const std::vector<Value>& params,
                   const RowCallback& on_row);

  // The first row, or std::nullopt when the result is empty.
  std::optional<Row> FetchOne(const std::string& sql,
                              const std::vector<Value>& params = {});

  // Whether a table exists ("schema.table" where the engine has schemas).
  bool TableExists(const std::string& table);

  // The standard grpc.health.v1.Health/Check status of `service`: "" is the
  // whole server, a database name that database. An unknown service throws
  // Error with NOT_FOUND.
  ServingStatus StandardHealth(const std::string& service);

  const std::string& database() const noexcept { return database_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string database_;
};

}  // namespace iadb

#endif  // IADB_CLIENT_H_
