package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	qsync "github.com/qase-sync/qase-sync/sync"
)

const linkCols = `route, project, kind, entity_id, state, tracker, marker_id, marker_label,
	issue_project, issue_id, issue_key, issue_url, applied, fingerprint, intent_at, created_at, updated_at`

func scanLink(sc interface{ Scan(...any) error }) (qsync.Link, error) {
	var l qsync.Link
	var kind, state string
	var applied []byte
	err := sc.Scan(&l.Key.Route, &l.Key.Project, &kind, &l.Key.ID, &state, &l.Tracker, &l.Marker.ID, &l.Marker.Label,
		&l.Issue.Project, &l.Issue.ID, &l.Issue.Key, &l.Issue.URL, &applied, &l.Fingerprint,
		At(&l.IntentAt), At(&l.CreatedAt), At(&l.UpdatedAt))
	if err != nil {
		return l, err
	}
	l.Key.Kind, l.State = qsync.Kind(kind), qsync.LinkState(state)
	if err := json.Unmarshal(applied, &l.Applied); err != nil {
		return l, fmt.Errorf("applied: %w", err)
	}
	return l, nil
}

// Link implements qsync.LinkStore.
func (s *Store) Link(ctx context.Context, k qsync.Key) (qsync.Link, bool, error) {
	return s.link(ctx, s.r, k)
}

func (s *Store) link(ctx context.Context, r reader, k qsync.Key) (qsync.Link, bool, error) {
	l, err := scanLink(r.QueryRowContext(ctx, s.q(`SELECT `+linkCols+` FROM links WHERE `+keyWhere), keyArgs(k)...))
	if errNoRows(err) {
		return qsync.Link{}, false, nil
	}
	if err != nil {
		return qsync.Link{}, false, s.errf("link %s: %w", k, err)
	}
	return l, true, nil
}

const saveLinkSQL = `INSERT INTO links (` + linkCols + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
	ON CONFLICT (route, project, kind, entity_id) DO UPDATE SET
		state = excluded.state, tracker = excluded.tracker,
		marker_id = excluded.marker_id, marker_label = excluded.marker_label,
		issue_project = excluded.issue_project, issue_id = excluded.issue_id,
		issue_key = excluded.issue_key, issue_url = excluded.issue_url,
		applied = excluded.applied, fingerprint = excluded.fingerprint,
		intent_at = excluded.intent_at, created_at = excluded.created_at, updated_at = excluded.updated_at`

// saveLink writes l in tx.
func (s *Store) saveLink(tx *Tx, l qsync.Link) error {
	applied, err := json.Marshal(l.Applied)
	if err != nil {
		return err
	}
	t := s.d.Text
	_, err = tx.Exec(saveLinkSQL, l.Key.Route, l.Key.Project, string(l.Key.Kind), l.Key.ID, string(l.State), l.Tracker,
		t(l.Marker.ID), t(l.Marker.Label), t(l.Issue.Project), t(l.Issue.ID), t(l.Issue.Key), t(l.Issue.URL),
		string(applied), l.Fingerprint, s.d.Time(l.IntentAt), s.d.Time(l.CreatedAt), s.d.Time(l.UpdatedAt))
	return err
}

// SaveLink implements qsync.LinkStore.
func (s *Store) SaveLink(ctx context.Context, l qsync.Link) error {
	if err := s.Tx(ctx, func(tx *Tx) error { return s.saveLink(tx, l) }); err != nil {
		return s.errf("save link %s: %w", l.Key, err)
	}
	return nil
}

// SaveLinkFenced implements qsync.LinkStore: the token check and the
// write share one transaction, and the job row stays locked from the
// check to the commit, so no Lease can come between them.
func (s *Store) SaveLinkFenced(ctx context.Context, l qsync.Link, job qsync.Job) error {
	if l.Key != job.Key {
		return s.errf("save link %s: fenced by the job of another key (%s)", l.Key, job.Key)
	}
	err := s.Tx(ctx, func(tx *Tx) error {
		if _, err := s.holds(tx, job); err != nil {
			return err
		}
		return s.saveLink(tx, l)
	})
	if err != nil {
		return s.errf("save link %s: %w", l.Key, err)
	}
	return nil
}

// DeleteLink implements qsync.LinkStore.
func (s *Store) DeleteLink(ctx context.Context, k qsync.Key) error {
	if _, err := s.exec(ctx, `DELETE FROM links WHERE `+keyWhere, keyArgs(k)...); err != nil {
		return s.errf("delete link %s: %w", k, err)
	}
	return nil
}

// DeleteLinkFenced implements qsync.LinkStore.
func (s *Store) DeleteLinkFenced(ctx context.Context, k qsync.Key, job qsync.Job) error {
	if k != job.Key {
		return s.errf("delete link %s: fenced by the job of another key (%s)", k, job.Key)
	}
	err := s.Tx(ctx, func(tx *Tx) error {
		if _, err := s.holds(tx, job); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM links WHERE `+keyWhere, keyArgs(k)...)
		return err
	})
	if err != nil {
		return s.errf("delete link %s: %w", k, err)
	}
	return nil
}

// Links implements qsync.LinkStore: keyset pagination in bytewise key
// order (PostgreSQL's key columns use the C collation).
func (s *Store) Links(ctx context.Context, route string, after qsync.Key, limit int) ([]qsync.Link, error) {
	q := `SELECT ` + linkCols + ` FROM links WHERE 1 = 1`
	args := []any{limitArg(limit)}
	if route != "" {
		args = append(args, route)
		q += ` AND route = $2`
	}
	if after != (qsync.Key{}) {
		n := len(args)
		q += fmt.Sprintf(` AND (route, project, kind, entity_id) > ($%d, $%d, $%d, $%d)`, n+1, n+2, n+3, n+4)
		args = append(args, keyArgs(after)...)
	}
	rows, err := s.query(ctx, q+` ORDER BY route, project, kind, entity_id LIMIT $1`, args...)
	ls, err := collect(rows, err, func(r *sql.Rows) (qsync.Link, error) { return scanLink(r) })
	if err != nil {
		return nil, s.errf("links: %w", err)
	}
	return ls, nil
}
