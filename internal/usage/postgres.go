package usage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is a Ledger on PostgreSQL, shared by every front door that uses
// it. It creates its table, bus_llm_usage, when missing, groups in SQL,
// and removes records older than Retention now and then.
type Postgres struct {
	pool      *pgxpool.Pool
	retention time.Duration
}

const usageSchema = `CREATE TABLE IF NOT EXISTS bus_llm_usage (
	request_id       text        PRIMARY KEY,
	time             timestamptz NOT NULL,
	identity         text        NOT NULL,
	model            text        NOT NULL,
	operation        text        NOT NULL,
	status           integer     NOT NULL,
	duration_ms      bigint      NOT NULL,
	input_tokens     bigint      NOT NULL,
	cached_tokens    bigint      NOT NULL,
	output_tokens    bigint      NOT NULL,
	reasoning_tokens bigint      NOT NULL,
	total_tokens     bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS bus_llm_usage_time ON bus_llm_usage (time);
CREATE INDEX IF NOT EXISTS bus_llm_usage_identity_time ON bus_llm_usage (identity, time);`

// OpenPostgres connects with dsn and creates the table when missing.
// retention bounds the records' age (DefaultRetention when 0).
func OpenPostgres(ctx context.Context, dsn string, retention time.Duration) (*Postgres, error) {
	if retention <= 0 {
		retention = DefaultRetention
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password: never echo it.
		return nil, errors.New("usage: BUS_EVENTS_POSTGRES_DSN is not a valid PostgreSQL DSN")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("usage: connect to postgres at %s: %w", cfg.ConnConfig.Host, err)
	}
	// Replicas may start together: serialize the CREATEs.
	if _, err := pool.Exec(ctx, `SELECT pg_advisory_lock(7411013); `+usageSchema+`; SELECT pg_advisory_unlock(7411013);`); err != nil {
		pool.Close()
		return nil, fmt.Errorf("usage: create table: %w", err)
	}
	return &Postgres{pool: pool, retention: retention}, nil
}

// Append implements Ledger: one INSERT per batch.
func (s *Postgres) Append(ctx context.Context, records []Record) error {
	if len(records) == 0 {
		return nil
	}
	n := len(records)
	var (
		ids, identities, models, ops                          = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		times                                                 = make([]time.Time, n)
		statuses                                              = make([]int32, n)
		durations, inputs, cached, outputs, reasoning, totals = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	)
	for i, r := range records {
		r = r.Normalize()
		ids[i], times[i], identities[i], models[i], ops[i] = r.RequestID, r.Time, r.Identity, r.Model, r.Operation
		statuses[i], durations[i] = int32(r.Status), r.DurationMS
		inputs[i], cached[i], outputs[i], reasoning[i], totals[i] = r.Input, r.Cached, r.Output, r.Reasoning, r.Total
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO bus_llm_usage (request_id, time, identity, model, operation, status, duration_ms,
			input_tokens, cached_tokens, output_tokens, reasoning_tokens, total_tokens)
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::bigint[],
			$8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[])
		ON CONFLICT (request_id) DO NOTHING`,
		ids, times, identities, models, ops, statuses, durations, inputs, cached, outputs, reasoning, totals)
	if err != nil {
		return fmt.Errorf("usage: insert: %w", err)
	}
	if time.Now().UnixNano()%32 == 0 {
		_, _ = s.pool.Exec(ctx, `DELETE FROM bus_llm_usage WHERE time < $1`, time.Now().Add(-s.retention))
	}
	return nil
}

// sums are the aggregate columns of a grouped query.
const sums = `count(*), coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(cached_tokens), 0)::bigint,
	coalesce(sum(output_tokens), 0)::bigint, coalesce(sum(reasoning_tokens), 0)::bigint, coalesce(sum(total_tokens), 0)::bigint`

// dayExpr is the UTC date of a record, as Day formats it.
const dayExpr = `to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD')`

// Query implements Ledger.
func (s *Postgres) Query(ctx context.Context, q Query) (Report, error) {
	where := `time >= $1 AND time < $2`
	args := []any{q.Start, q.End}
	if q.Identity != "" {
		where += ` AND identity = $3`
		args = append(args, q.Identity)
	}
	if q.Listing() {
		return s.list(ctx, q, where, args)
	}
	var keys []string // the group columns, in the Row's key order
	for _, d := range q.GroupBy {
		switch d {
		case DimDay:
			keys = append(keys, dayExpr)
		case DimIdentity:
			keys = append(keys, `identity`)
		case DimModel:
			keys = append(keys, `model`)
		}
	}
	sql := `SELECT ` + strings.Join(append(slices.Clone(keys), sums), ", ") + ` FROM bus_llm_usage WHERE ` + where
	if len(keys) > 0 {
		order := make([]string, len(keys))
		for i, k := range keys {
			order[i] = k + ` COLLATE "C"`
		}
		sql += ` GROUP BY ` + strings.Join(keys, ", ") + ` ORDER BY ` + strings.Join(order, ", ")
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return Report{}, fmt.Errorf("usage: query: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Row, error) {
		var r Row
		dest := make([]any, 0, len(keys)+6)
		for _, d := range q.GroupBy {
			switch d {
			case DimDay:
				dest = append(dest, &r.Day)
			case DimIdentity:
				dest = append(dest, &r.Identity)
			case DimModel:
				dest = append(dest, &r.Model)
			}
		}
		dest = append(dest, &r.Requests, &r.Input, &r.Cached, &r.Output, &r.Reasoning, &r.Total)
		return r, row.Scan(dest...)
	})
	if err != nil {
		return Report{}, fmt.Errorf("usage: query: %w", err)
	}
	if out == nil {
		out = []Row{}
	}
	return Report{Rows: out}, nil
}

// list answers a request listing.
func (s *Postgres) list(ctx context.Context, q Query, where string, args []any) (Report, error) {
	limit := q.limit()
	rows, err := s.pool.Query(ctx, `SELECT request_id, time, identity, model, operation, status, duration_ms,
			input_tokens, cached_tokens, output_tokens, reasoning_tokens, total_tokens
		FROM bus_llm_usage WHERE `+where+` ORDER BY time, request_id COLLATE "C" LIMIT `+fmt.Sprint(limit+1), args...)
	if err != nil {
		return Report{}, fmt.Errorf("usage: query: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Row, error) {
		var r Record
		var status int32
		err := row.Scan(&r.RequestID, &r.Time, &r.Identity, &r.Model, &r.Operation, &status, &r.DurationMS,
			&r.Input, &r.Cached, &r.Output, &r.Reasoning, &r.Total)
		r.Status = int(status)
		return rowOf(r.Normalize()), err
	})
	if err != nil {
		return Report{}, fmt.Errorf("usage: query: %w", err)
	}
	if len(out) > limit {
		return Report{Rows: out[:limit], HasMore: true}, nil
	}
	if out == nil {
		out = []Row{}
	}
	return Report{Rows: out}, nil
}

// Close implements Ledger.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}
