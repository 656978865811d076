#include "iadb_client.h"

#include <google/protobuf/message.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <limits>
#include <map>
#include <sstream>
#include <utility>

#include "grpc/health/v1/health.grpc.pb.h"
#include "iadb/v1/database.grpc.pb.h"

namespace iadb {

namespace pb = ::iadb::v1;
namespace health = ::grpc::health::v1;

namespace {

// The largest message the client accepts (a FetchOne row, a batch); the
// server's own limit is 64 MiB by default.
constexpr int kMaxMessageBytes = 64 * 1024 * 1024;

template <class... Fs>
struct Overloaded : Fs... {
  using Fs::operator()...;
};
template <class... Fs>
Overloaded(Fs...) -> Overloaded<Fs...>;

void ToProto(const Value& value, pb::Value* out) {
  std::visit(
      Overloaded{
          [&](std::nullptr_t) { out->set_null(pb::NULL_VALUE_UNSPECIFIED); },
          [&](bool v) { out->set_bool_(v); },
          [&](std::int64_t v) { out->set_int_(v); },
          [&](double v) { out->set_double_(v); },
          [&](const std::string& v) { out->set_text(v); },
          [&](const Bytes& v) {
            out->set_bytes(std::string(v.begin(), v.end()));
          },
          [&](const Decimal& v) { out->set_decimal(v.text); },
          [&](const Date& v) { out->set_date(v.text); },
          [&](const Time& v) { out->set_time(v.text); },
          [&](const DateTime& v) { out->set_datetime(v.text); },
          [&](const TimestampTz& v) { out->set_timestamp_tz(v.text); },
          [&](const Json& v) { out->set_json(v.text); },
      },
      value);
}

Value FromProto(const pb::Value& v) {
  switch (v.kind_case()) {
    case pb::Value::KIND_NOT_SET:
      // A kind newer than these stubs arrives as an unknown field: refuse it
      // rather than read it as NULL.
      if (const google::protobuf::UnknownFieldSet& unknown =
              v.GetReflection()->GetUnknownFields(v);
          unknown.field_count() > 0) {
        throw Error(grpc::StatusCode::INTERNAL,
                    "iadb: a value of a kind these stubs do not know (field " +
                        std::to_string(unknown.field(0).number()) +
                        "); regenerate them from a newer proto");
      }
      return nullptr;
    case pb::Value::kNull:
      return nullptr;
    case pb::Value::kBool:
      return v.bool_();
    case pb::Value::kInt:
      return static_cast<std::int64_t>(v.int_());
    case pb::Value::kDouble:
      return v.double_();
    case pb::Value::kText:
      return v.text();
    case pb::Value::kBytes:
      return Bytes(v.bytes().begin(), v.bytes().end());
    case pb::Value::kDecimal:
      return Decimal{v.decimal()};
    case pb::Value::kDate:
      return Date{v.date()};
    case pb::Value::kTime:
      return Time{v.time()};
    case pb::Value::kDatetime:
      return DateTime{v.datetime()};
    case pb::Value::kTimestampTz:
      return TimestampTz{v.timestamp_tz()};
    case pb::Value::kJson:
      return Json{v.json()};
  }
  // Every case returns: this is not reached.
  return nullptr;
}

template <class Request>
void FillParams(const std::vector<Value>& params, Request* req) {
  for (const Value& p : params) ToProto(p, req->add_params());
}

std::vector<Column> ColumnsFromProto(
    const google::protobuf::RepeatedPtrField<pb::Column>& cols) {
  std::vector<Column> out;
  out.reserve(static_cast<std::size_t>(cols.size()));
  for (const pb::Column& c : cols) out.push_back({c.name(), c.declared_type()});
  return out;
}

std::vector<Value> ValuesFromProto(const pb::Row& row) {
  std::vector<Value> out;
  out.reserve(static_cast<std::size_t>(row.values_size()));
  for (const pb::Value& v : row.values()) out.push_back(FromProto(v));
  return out;
}

std::string FindMetadata(
    const std::multimap<grpc::string_ref, grpc::string_ref>& md,
    const char* key) {
  auto it = md.find(key);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// The status of a finished call as an Error, with the SQLSTATE the server
// put in the trailers (or the headers of a trailers-only response).
Error ToError(const grpc::Status& status, const grpc::ClientContext& ctx) {
  std::string sqlstate =
      FindMetadata(ctx.GetServerTrailingMetadata(), "iadb-sqlstate");
  if (sqlstate.empty()) {
    sqlstate = FindMetadata(ctx.GetServerInitialMetadata(), "iadb-sqlstate");
  }
  // A tonic server answers its own deadline timer with CANCELLED "Timeout
  // expired", at the same instant as ours: either way the deadline passed.
  grpc::StatusCode code = status.error_code();
  if (code == grpc::StatusCode::CANCELLED &&
      status.error_message() == "Timeout expired") {
    code = grpc::StatusCode::DEADLINE_EXCEEDED;
  }
  return Error(code, status.error_message(), sqlstate);
}

Error ProtocolError(const std::string& what) {
  return Error(grpc::StatusCode::INTERNAL, "iadb FetchAll protocol: " + what);
}

std::string Hex(const Bytes& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xf]);
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------- values

bool operator==(const Decimal& a, const Decimal& b) { return a.text == b.text; }
bool operator==(const Date& a, const Date& b) { return a.text == b.text; }
bool operator==(const Time& a, const Time& b) { return a.text == b.text; }
bool operator==(const DateTime& a, const DateTime& b) {
  return a.text == b.text;
}
bool operator==(const TimestampTz& a, const TimestampTz& b) {
  return a.text == b.text;
}
bool operator==(const Json& a, const Json& b) { return a.text == b.text; }

const char* KindName(const Value& value) {
  static const char* const names[] = {
      "null", "bool",     "int",      "double",       "text", "bytes",
      "decimal", "date", "time", "datetime", "timestamp_tz", "json"};
  static_assert(sizeof(names) / sizeof(names[0]) == std::variant_size_v<Value>,
                "one name per Value alternative");
  return names[value.index()];
}

std::string ToString(const Value& value) {
  return std::visit(
      Overloaded{
          [](std::nullptr_t) -> std::string { return "NULL"; },
          [](bool v) -> std::string { return v ? "true" : "false"; },
          [](std::int64_t v) { return std::to_string(v); },
          [](double v) -> std::string {
            if (std::isnan(v)) return "NaN";
            if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
            std::ostringstream s;
            s.precision(std::numeric_limits<double>::max_digits10);
            s << v;
            return s.str();
          },
          [](const std::string& v) { return "'" + v + "'"; },
          [](const Bytes& v) { return "x'" + Hex(v) + "'"; },
          [](const Decimal& v) { return "decimal '" + v.text + "'"; },
          [](const Date& v) { return "date '" + v.text + "'"; },
          [](const Time& v) { return "time '" + v.text + "'"; },
          [](const DateTime& v) { return "datetime '" + v.text + "'"; },
          [](const TimestampTz& v) { return "timestamptz '" + v.text + "'"; },
          [](const Json& v) { return "json '" + v.text + "'"; },
      },
      value);
}

// ---------------------------------------------------------------- errors

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN_CODE";
  }
}

Error::Error(grpc::StatusCode code, std::string message, std::string sqlstate)
    : std::runtime_error(std::string(StatusCodeName(code)) + ": " + message),
      code_(code),
      message_(std::move(message)),
      sqlstate_(std::move(sqlstate)) {}

// ---------------------------------------------------------------- rows

Row::Row(std::shared_ptr<const std::vector<Column>> columns,
         std::vector<Value> values)
    : columns_(std::move(columns)), values_(std::move(values)) {}

const Value& Row::operator[](std::size_t index) const {
  return values_.at(index);
}

const Value& Row::operator[](std::string_view name) const {
  const std::vector<Column>& cols = *columns_;
  for (std::size_t i = 0; i < cols.size() && i < values_.size(); ++i) {
    if (cols[i].name == name) return values_[i];
  }
  throw std::out_of_range("iadb::Row: no column named '" + std::string(name) +
                          "'");
}

const char* ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kUnknown: return "UNKNOWN";
    case ServingStatus::kServing: return "SERVING";
    case ServingStatus::kNotServing: return "NOT_SERVING";
    case ServingStatus::kServiceUnknown: return "SERVICE_UNKNOWN";
  }
  return "UNKNOWN";
}

// ---------------------------------------------------------------- client

struct Client::Impl {
  explicit Impl(std::shared_ptr<grpc::Channel> ch)
      : channel(std::move(ch)),
        database(pb::Database::NewStub(channel)),
        health(health::Health::NewStub(channel)) {}

  // A fresh context per call, with the deadline if one is set.
  void Prepare(grpc::ClientContext* ctx) const {
    if (timeout.count() > 0) {
      ctx->set_deadline(std::chrono::system_clock::now() + timeout);
    }
  }

  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Database::Stub> database;
  std::unique_ptr<health::Health::Stub> health;
  std::chrono::milliseconds timeout{0};
};

namespace {
std::shared_ptr<grpc::Channel> PlaintextChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}
}  // namespace

Client::Client(const std::string& address, std::string database)
    : Client(PlaintextChannel(address), std::move(database)) {}

Client::Client(std::shared_ptr<grpc::Channel> channel, std::string database)
    : impl_(std::make_unique<Impl>(std::move(channel))),
      database_(std::move(database)) {}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

void Client::set_timeout(std::chrono::milliseconds timeout) {
  impl_->timeout = timeout;
}

std::uint64_t Client::Execute(const std::string& sql,
                              const std::vector<Value>& params) {
  pb::ExecuteRequest req;
  req.set_database(database_);
  req.set_sql(sql);
  FillParams(params, &req);
  pb::ExecuteResponse resp;
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx);
  grpc::Status status = impl_->database->Execute(&ctx, req, &resp);
  if (!status.ok()) throw ToError(status, ctx);
  return resp.rows_affected();
}

Summary Client::FetchAll(const std::string& sql,
                         const std::vector<Value>& params,
                         const RowCallback& on_row) {
  pb::FetchAllRequest req;
  req.set_database(database_);
  req.set_sql(sql);
  FillParams(params, &req);
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx);
  std::unique_ptr<grpc::ClientReader<pb::FetchAllResponse>> reader =
      impl_->database->FetchAll(&ctx, req);

  Summary summary;
  std::shared_ptr<const std::vector<Column>> columns;
  bool have_summary = false;
  std::uint64_t received = 0;
  std::string broken;  // why the stream breaks the protocol, if it does
  pb::FetchAllResponse frame;
  try {
    while (broken.empty() && reader->Read(&frame)) {
      switch (frame.frame_case()) {
        case pb::FetchAllResponse::kHeader:
          if (columns || have_summary) {
            broken = "a second header";
            break;
          }
          columns = std::make_shared<const std::vector<Column>>(
              ColumnsFromProto(frame.header().columns()));
          break;
        case pb::FetchAllResponse::kBatch:
          if (!columns || have_summary) {
            broken = columns ? "rows after the summary" : "rows before the header";
            break;
          }
          for (const pb::Row& r : frame.batch().rows()) {
            if (static_cast<std::size_t>(r.values_size()) != columns->size()) {
              broken = "a row of " + std::to_string(r.values_size()) +
                       " values for " + std::to_string(columns->size()) +
                       " columns";
              break;
            }
            ++received;
            on_row(Row(columns, ValuesFromProto(r)));
          }
          break;
        case pb::FetchAllResponse::kSummary:
          if (!columns || have_summary) {
            broken = columns ? "a second summary" : "a summary before the header";
            break;
          }
          have_summary = true;
          summary.row_count = frame.summary().row_count();
          summary.rows_affected = frame.summary().rows_affected();
          summary.execution_time_ms = frame.summary().execution_time_ms();
          break;
        case pb::FetchAllResponse::kArrow:
          // This client asks for rows; Arrow data is a server that broke
          // the contract, never rows to skip.
          broken = "Arrow data for a fetch that asked for rows";
          break;
        case pb::FetchAllResponse::FRAME_NOT_SET:
          broken = "an empty frame";
          break;
      }
    }
  } catch (...) {
    // The caller's callback (or a value conversion) failed: stop the query.
    ctx.TryCancel();
    reader->Finish();
    throw;
  }
  if (!broken.empty()) {
    ctx.TryCancel();
    reader->Finish();
    throw ProtocolError(broken);
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) throw ToError(status, ctx);
  if (!have_summary) throw ProtocolError("the stream ended without a summary");
  if (summary.row_count != received) {
    throw ProtocolError("the summary counts " +
                        std::to_string(summary.row_count) + " rows, " +
                        std::to_string(received) + " arrived");
  }
  summary.columns = *columns;
  return summary;
}

std::optional<Row> Client::FetchOne(const std::string& sql,
                                    const std::vector<Value>& params) {
  pb::FetchOneRequest req;
  req.set_database(database_);
  req.set_sql(sql);
  FillParams(params, &req);
  pb::FetchOneResponse resp;
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx);
  grpc::Status status = impl_->database->FetchOne(&ctx, req, &resp);
  if (!status.ok()) throw ToError(status, ctx);
  if (!resp.has_row()) return std::nullopt;
  auto columns = std::make_shared<const std::vector<Column>>(
      ColumnsFromProto(resp.columns()));
  return Row(std::move(columns), ValuesFromProto(resp.row()));
}

bool Client::TableExists(const std::string& table) {
  pb::TableExistsRequest req;
  req.set_database(database_);
  req.set_table(table);
  pb::TableExistsResponse resp;
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx);
  grpc::Status status = impl_->database->TableExists(&ctx, req, &resp);
  if (!status.ok()) throw ToError(status, ctx);
  return resp.exists();
}

ServingStatus Client::StandardHealth(const std::string& service) {
  health::HealthCheckRequest req;
  req.set_service(service);
  health::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx);
  grpc::Status status = impl_->health->Check(&ctx, req, &resp);
  if (!status.ok()) throw ToError(status, ctx);
  switch (resp.status()) {
    case health::HealthCheckResponse::SERVING:
      return ServingStatus::kServing;
    case health::HealthCheckResponse::NOT_SERVING:
      return ServingStatus::kNotServing;
    case health::HealthCheckResponse::SERVICE_UNKNOWN:
      return ServingStatus::kServiceUnknown;
    default:
      return ServingStatus::kUnknown;
  }
}

}  // namespace iadb
