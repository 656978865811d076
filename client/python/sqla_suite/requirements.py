"""What the iadb drivers support, for SQLAlchemy's suite. Each exclusion
says why; ``client/python/README.md`` ("SQLAlchemy's dialect suite") lists
them with the counts."""

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements


class Requirements(SuiteRequirements):
    @property
    def schemas(self):
        # SQLite's other schemas are ATTACHed databases: ATTACH holds for one
        # connection, and the server's pool hands out several.
        return exclusions.skip_if("sqlite", "ATTACH is per connection; the server pools connections")

    @property
    def parens_in_union_contained_select_w_limit_offset(self):
        # SQLite's grammar (SQLAlchemy's own requirements skip it too).
        return exclusions.skip_if("sqlite", "SQLite has no parenthesized SELECT in a UNION")

    @property
    def parens_in_union_contained_select_wo_limit_offset(self):
        return exclusions.skip_if("sqlite", "SQLite has no parenthesized SELECT in a UNION")

    @property
    def temporary_tables(self):
        # A temporary table lives on one engine connection; each of the
        # server's transactions may get another one from its pool.
        return exclusions.closed()

    @property
    def temp_table_reflection(self):
        return exclusions.closed()

    # What SQLite and PostgreSQL have, as SQLAlchemy's own requirements
    # say for them (the suite's defaults are closed).
    @property
    def views(self):
        return exclusions.open()

    @property
    def reflects_pk_names(self):
        return exclusions.open()

    @property
    def reflect_table_options(self):
        return exclusions.only_on(["sqlite", "postgresql", "mysql", "mariadb"])

    @property
    def check_constraint_reflection(self):
        # On SQLite, the multi-table check constraint tests fail the same way
        # with SQLAlchemy's own driver (pysqlite) under this requirement set.
        return exclusions.only_on(["postgresql"])

    @property
    def comment_reflection(self):
        return exclusions.only_on(["postgresql", "mysql", "mariadb"])

    @property
    def foreign_key_constraint_option_reflection_ondelete(self):
        return exclusions.only_on(["postgresql", "sqlite", "mysql", "mariadb"])

    @property
    def fk_constraint_option_reflection_ondelete_noaction(self):
        return exclusions.only_on(["postgresql", "sqlite", "mysql", "mariadb"])

    @property
    def foreign_key_constraint_option_reflection_onupdate(self):
        return exclusions.only_on(["postgresql", "sqlite", "mysql", "mariadb"])

    @property
    def supports_distinct_on(self):
        return exclusions.only_on(["postgresql"])

    # More of what both engines have (closed in the suite's defaults), so
    # that the suite runs them through iadb too.
    @property
    def table_ddl_if_exists(self):
        return exclusions.open()

    @property
    def index_ddl_if_exists(self):
        return exclusions.open()

    @property
    def create_table_as(self):
        return exclusions.open()

    @property
    def intersect(self):
        return exclusions.open()

    @property
    def except_(self):
        return exclusions.open()

    @property
    def window_functions(self):
        return exclusions.open()

    @property
    def ctes(self):
        return exclusions.open()

    @property
    def ctes_with_values(self):
        return exclusions.open()

    @property
    def ctes_on_dml(self):
        return exclusions.only_on(["postgresql"])

    @property
    def ctes_with_update_delete(self):
        return exclusions.only_on(["postgresql"])

    @property
    def tuple_in(self):
        return exclusions.open()

    @property
    def nullsordering(self):
        return exclusions.open()

    @property
    def server_defaults(self):
        return exclusions.open()

    @property
    def expression_server_defaults(self):
        return exclusions.open()

    @property
    def computed_columns(self):
        # PostgreSQL before 18 has STORED ones only, and SQLAlchemy warns
        # when it renders one (the warning fails the test).
        return exclusions.only_on(["sqlite"])

    @property
    def computed_columns_stored(self):
        return exclusions.only_on(["sqlite"])

    @property
    def datetime_historic(self):
        return exclusions.open()

    @property
    def date_historic(self):
        return exclusions.open()

    @property
    def json_type(self):
        return exclusions.open()

    @property
    def autocommit(self):
        return exclusions.open()

    @property
    def update_from(self):
        return exclusions.only_on(["postgresql"])

    @property
    def delete_from(self):
        return exclusions.only_on(["postgresql"])

    @property
    def uuid_data_type(self):
        return exclusions.only_on(["postgresql"])

    @property
    def identity_columns(self):
        return exclusions.only_on(["postgresql"])

    @property
    def identity_columns_standard(self):
        return exclusions.only_on(["postgresql"])

    @property
    def regexp_match(self):
        return exclusions.only_on(["postgresql"])

    @property
    def regexp_replace(self):
        return exclusions.only_on(["postgresql"])

    @property
    def fetch_first(self):
        return exclusions.only_on(["postgresql"])

    @property
    def fetch_ties(self):
        return exclusions.only_on(["postgresql"])

    @property
    def fetch_offset_with_options(self):
        return exclusions.only_on(["postgresql"])

    @property
    def fetch_expression(self):
        return exclusions.only_on(["postgresql"])

    @property
    def datetime_timezone(self):
        return exclusions.only_on(["postgresql"])

    @property
    def time_timezone(self):
        # A tz-aware datetime.time has no wire kind in iadb (a TypeError
        # before anything is sent; see README.md, Types).
        return exclusions.closed()

    @property
    def supports_bitwise_or(self):
        return exclusions.only_on(["postgresql"])

    @property
    def supports_bitwise_and(self):
        return exclusions.only_on(["postgresql"])

    @property
    def supports_bitwise_not(self):
        return exclusions.only_on(["postgresql"])

    @property
    def supports_bitwise_xor(self):
        return exclusions.only_on(["postgresql"])

    @property
    def supports_bitwise_shift(self):
        return exclusions.only_on(["postgresql"])
