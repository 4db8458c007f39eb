package respstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is a Store on PostgreSQL, shared by every worker that uses it.
// It creates its table, bus_llm_responses, when missing.
type Postgres struct {
	pool *pgxpool.Pool
}

const schema = `CREATE TABLE IF NOT EXISTS bus_llm_responses (
	identity   text        NOT NULL,
	id         text        NOT NULL,
	created_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL,
	record     jsonb       NOT NULL,
	PRIMARY KEY (identity, id)
);
CREATE INDEX IF NOT EXISTS bus_llm_responses_expires ON bus_llm_responses (expires_at);`

// OpenPostgres connects with dsn and creates the table when missing.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password: never echo it.
		return nil, errors.New("respstore: BUS_EVENTS_POSTGRES_DSN is not a valid PostgreSQL DSN")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("respstore: connect to postgres at %s: %w", cfg.ConnConfig.Host, err)
	}
	// Replicas may start together: serialize the CREATEs.
	if _, err := pool.Exec(ctx, `SELECT pg_advisory_lock(7411001); `+schema+`; SELECT pg_advisory_unlock(7411001);`); err != nil {
		pool.Close()
		return nil, fmt.Errorf("respstore: create table: %w", err)
	}
	return &Postgres{pool: pool}, nil
}

// Put implements Store. Expired rows are removed on the way, now and then.
func (s *Postgres) Put(ctx context.Context, r Record, ttl time.Duration) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("respstore: encode: %w", err)
	}
	now := time.Now()
	if _, err := s.pool.Exec(ctx, `INSERT INTO bus_llm_responses (identity, id, created_at, expires_at, record)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (identity, id) DO UPDATE SET expires_at = EXCLUDED.expires_at, record = EXCLUDED.record`,
		r.Identity, r.ID, now, now.Add(ttl), b); err != nil {
		return fmt.Errorf("respstore: insert: %w", err)
	}
	if now.UnixNano()%64 == 0 {
		_, _ = s.pool.Exec(ctx, `DELETE FROM bus_llm_responses WHERE expires_at < now()`)
	}
	return nil
}

// Get implements Store.
func (s *Postgres) Get(ctx context.Context, identity, id string) (Record, error) {
	var b []byte
	err := s.pool.QueryRow(ctx, `SELECT record FROM bus_llm_responses WHERE identity = $1 AND id = $2 AND expires_at > now()`, identity, id).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("respstore: select: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("respstore: decode: %w", err)
	}
	return r, nil
}

// Delete implements Store.
func (s *Postgres) Delete(ctx context.Context, identity, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM bus_llm_responses WHERE identity = $1 AND id = $2 AND expires_at > now()`, identity, id)
	if err != nil {
		return fmt.Errorf("respstore: delete: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Close implements Store.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}
