package entitlement

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is a Store on PostgreSQL, shared by every front door that uses
// it. Counters are rows of bus_llm_limit_counters; an admission is one
// call of the function bus_llm_limits_admit, which locks the counters' rows
// (always in the same order) so concurrent admissions on any replica are
// serialized. Both are created at start-up when missing; expired counters
// are deleted now and then.
type Postgres struct {
	pool *pgxpool.Pool
}

const limitsSchema = `CREATE TABLE IF NOT EXISTS bus_llm_limit_counters (
	key        text        PRIMARY KEY,
	value      bigint      NOT NULL,
	expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS bus_llm_limit_counters_expires ON bus_llm_limit_counters (expires_at);
CREATE OR REPLACE FUNCTION bus_llm_limits_admit(p_keys text[], p_limits bigint[], p_costs bigint[], p_expires timestamptz[])
RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
	vals    bigint[] := '{}';
	v       bigint;
	refused int := 0;
	n       int := coalesce(array_length(p_keys, 1), 0);
BEGIN
	FOR i IN 1 .. n LOOP
		INSERT INTO bus_llm_limit_counters AS c (key, value, expires_at) VALUES (p_keys[i], 0, p_expires[i])
			ON CONFLICT (key) DO UPDATE SET expires_at = greatest(c.expires_at, EXCLUDED.expires_at)
			RETURNING c.value INTO v;
		vals := vals || v;
		IF refused = 0 AND v + greatest(p_costs[i], 1) > p_limits[i] THEN
			refused := i;
		END IF;
	END LOOP;
	IF refused = 0 THEN
		FOR i IN 1 .. n LOOP
			IF p_costs[i] > 0 THEN
				UPDATE bus_llm_limit_counters SET value = value + p_costs[i] WHERE key = p_keys[i] RETURNING value INTO v;
				vals[i] := v;
			END IF;
		END LOOP;
	END IF;
	RETURN array_prepend(refused::bigint, vals);
END
$fn$;`

// OpenPostgres connects with dsn and creates the table and function when
// missing.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password: never echo it.
		return nil, errors.New("entitlement: BUS_EVENTS_POSTGRES_DSN is not a valid PostgreSQL DSN")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("entitlement: connect to postgres at %s: %w", cfg.ConnConfig.Host, err)
	}
	// Replicas may start together: serialize the CREATEs.
	if _, err := pool.Exec(ctx, `SELECT pg_advisory_lock(7411014); `+limitsSchema+`; SELECT pg_advisory_unlock(7411014);`); err != nil {
		pool.Close()
		return nil, fmt.Errorf("entitlement: create table: %w", err)
	}
	return &Postgres{pool: pool}, nil
}

// Admit implements Store: one round trip.
func (s *Postgres) Admit(ctx context.Context, cs []Counter) ([]int64, int, error) {
	keys, limits, costs, expires := columns(cs)
	var out []int64
	if err := s.pool.QueryRow(ctx, `SELECT bus_llm_limits_admit($1, $2, $3, $4)`, keys, limits, costs, expires).Scan(&out); err != nil {
		return nil, 0, fmt.Errorf("entitlement: postgres admit: %w", err)
	}
	if len(out) != len(cs)+1 {
		return nil, 0, fmt.Errorf("entitlement: postgres admit: %d values for %d counters", len(out)-1, len(cs))
	}
	s.sweep(ctx)
	return out[1:], int(out[0]) - 1, nil
}

// Add implements Store: one upsert.
func (s *Postgres) Add(ctx context.Context, cs []Counter) error {
	// One row may not be upserted twice in a statement: merge repeated keys.
	merged := make([]Counter, 0, len(cs))
	at := map[string]int{}
	for _, c := range cs {
		if i, ok := at[c.Key]; ok {
			merged[i].Cost += c.Cost
			merged[i].Expires = later(merged[i].Expires, c.Expires)
			continue
		}
		at[c.Key] = len(merged)
		merged = append(merged, c)
	}
	keys, _, costs, expires := columns(merged)
	_, err := s.pool.Exec(ctx, `INSERT INTO bus_llm_limit_counters AS c (key, value, expires_at)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[])
		ON CONFLICT (key) DO UPDATE SET value = c.value + EXCLUDED.value, expires_at = greatest(c.expires_at, EXCLUDED.expires_at)`,
		keys, costs, expires)
	if err != nil {
		return fmt.Errorf("entitlement: postgres add: %w", err)
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func columns(cs []Counter) (keys []string, limits, costs []int64, expires []time.Time) {
	for _, c := range cs {
		keys = append(keys, c.Key)
		limits = append(limits, c.Limit)
		costs = append(costs, c.Cost)
		expires = append(expires, c.Expires)
	}
	return keys, limits, costs, expires
}

// sweep deletes expired counters about once in 256 admissions.
func (s *Postgres) sweep(ctx context.Context) {
	if time.Now().UnixNano()%256 == 0 {
		_, _ = s.pool.Exec(ctx, `DELETE FROM bus_llm_limit_counters WHERE expires_at < now()`)
	}
}

// Close implements Store.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}
