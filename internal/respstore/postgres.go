package respstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is a Store on PostgreSQL, shared by every worker that uses it.
// It creates its table, bus_llm_responses, when missing (and adds the
// chain columns to a table of an earlier version, whose records hold their
// whole history and so are chains of one).
type Postgres struct {
	pool *pgxpool.Pool
	o    options
	puts atomic.Int64
}

const schema = `CREATE TABLE IF NOT EXISTS bus_llm_responses (
	identity   text        NOT NULL,
	id         text        NOT NULL,
	created_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL,
	record     jsonb       NOT NULL,
	PRIMARY KEY (identity, id)
);
ALTER TABLE bus_llm_responses ADD COLUMN IF NOT EXISTS previous text NOT NULL DEFAULT '';
ALTER TABLE bus_llm_responses ADD COLUMN IF NOT EXISTS deleted boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS bus_llm_responses_expires ON bus_llm_responses (expires_at);`

// OpenPostgres connects with dsn and creates the table when missing.
func OpenPostgres(ctx context.Context, dsn string, opts ...Option) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password: never echo it.
		return nil, errors.New("respstore: BUS_EVENTS_POSTGRES_DSN is not a valid PostgreSQL DSN")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("respstore: connect to postgres at %s: %w", cfg.ConnConfig.Host, err)
	}
	// Replicas may start together: serialize the DDL.
	if _, err := pool.Exec(ctx, `SELECT pg_advisory_lock(7411001); `+schema+`; SELECT pg_advisory_unlock(7411001);`); err != nil {
		pool.Close()
		return nil, fmt.Errorf("respstore: create table: %w", err)
	}
	return &Postgres{pool: pool, o: newOptions(opts)}, nil
}

// Put implements Store: the record, and its chain kept at least as long.
// Expired rows are removed on the way, now and then.
func (s *Postgres) Put(ctx context.Context, r Record, ttl time.Duration) error {
	b, err := encode(r)
	if err != nil {
		return err
	}
	now := s.o.now()
	exp := now.Add(ttl)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO bus_llm_responses (identity, id, created_at, expires_at, record, previous, deleted)
			VALUES ($1, $2, $3, $4, $5, $6, false)
			ON CONFLICT (identity, id) DO UPDATE SET expires_at = EXCLUDED.expires_at, record = EXCLUDED.record,
				previous = EXCLUDED.previous, deleted = false`,
			r.Identity, r.ID, now, exp, b, r.Previous); err != nil {
			return fmt.Errorf("respstore: insert: %w", err)
		}
		if r.Previous == "" {
			return nil
		}
		_, err := tx.Exec(ctx, `WITH RECURSIVE chain(id, depth) AS (
				SELECT $2::text, 1
				UNION ALL
				SELECT r.previous, c.depth + 1 FROM bus_llm_responses r JOIN chain c ON r.identity = $1 AND r.id = c.id
				WHERE r.previous <> '' AND c.depth < $4
			)
			UPDATE bus_llm_responses SET expires_at = $3
			WHERE identity = $1 AND id IN (SELECT id FROM chain) AND expires_at < $3`,
			r.Identity, r.Previous, exp, s.o.maxDepth)
		if err != nil {
			return fmt.Errorf("respstore: extend chain: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if s.puts.Add(1)%256 == 0 {
		_, _ = s.pool.Exec(ctx, `DELETE FROM bus_llm_responses WHERE expires_at < $1`, now)
	}
	return nil
}

// Get implements Store.
func (s *Postgres) Get(ctx context.Context, identity, id string) (Record, error) {
	var b []byte
	err := s.pool.QueryRow(ctx, `SELECT record FROM bus_llm_responses
		WHERE identity = $1 AND id = $2 AND expires_at > $3 AND NOT deleted`, identity, id, s.o.now()).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("respstore: select: %w", err)
	}
	return decodeRecord(b)
}

func decodeRecord(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("respstore: decode: %w", err)
	}
	return r, nil
}

// Chain implements Store: one recursive query, the owner in every step.
func (s *Postgres) Chain(ctx context.Context, identity, id string) ([]Record, error) {
	rows, err := s.pool.Query(ctx, `WITH RECURSIVE chain(id, previous, record, deleted, expires_at, depth) AS (
			SELECT id, previous, record - 'response', deleted, expires_at, 1
			FROM bus_llm_responses WHERE identity = $1 AND id = $2
			UNION ALL
			SELECT r.id, r.previous, r.record - 'response', r.deleted, r.expires_at, c.depth + 1
			FROM bus_llm_responses r JOIN chain c ON r.identity = $1 AND r.id = c.previous
			WHERE c.previous <> '' AND c.depth <= $3
		)
		SELECT id, previous, record, deleted, expires_at > $4 FROM chain ORDER BY depth`,
		identity, id, s.o.maxDepth, s.o.now())
	if err != nil {
		return nil, fmt.Errorf("respstore: chain: %w", err)
	}
	defer rows.Close()
	var (
		chain []Record
		bytes int64
		want  = id
	)
	for rows.Next() {
		var (
			rowID, previous string
			b               []byte
			deleted, live   bool
		)
		if err := rows.Scan(&rowID, &previous, &b, &deleted, &live); err != nil {
			return nil, fmt.Errorf("respstore: chain: %w", err)
		}
		switch {
		case rowID != want || !live || (len(chain) == 0 && deleted):
			if len(chain) == 0 {
				return nil, ErrNotFound
			}
			return nil, broken(id, want)
		case len(chain) == s.o.maxDepth:
			return nil, tooLong(s.o)
		}
		if bytes += int64(len(b)); bytes > s.o.maxHistoryBytes {
			return nil, tooLong(s.o)
		}
		r, err := decodeRecord(b)
		if err != nil {
			return nil, err
		}
		r.Previous = previous // rows of an earlier version lack it in the JSON
		chain = append(chain, r)
		if want = previous; want == "" {
			return chain, nil
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("respstore: chain: %w", err)
	}
	if len(chain) == 0 {
		return nil, ErrNotFound
	}
	return nil, broken(id, want)
}

// Delete implements Store.
func (s *Postgres) Delete(ctx context.Context, identity, id string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE bus_llm_responses SET deleted = true, record = record - 'response'
		WHERE identity = $1 AND id = $2 AND expires_at > $3 AND NOT deleted`, identity, id, s.o.now())
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
