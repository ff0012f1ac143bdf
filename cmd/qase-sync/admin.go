package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// adminHandler serves the operator API under /admin/, protected by a
// bearer token. Without a configured token it does not exist (404).
//
//	GET    /admin/deadletters           list
//	GET    /admin/deadletters/{id}      show
//	POST   /admin/deadletters/{id}/retry
//	DELETE /admin/deadletters/{id}      drop
//	GET    /admin/events                ledger summary (pending/applied/noop/dead)
//	GET    /admin/status                what the status page's overview shows, as JSON
//	GET    /admin/explain?q=QA-1        provenance of an issue or a Qase entity (PROJECT/KIND/ID)
//	POST   /admin/reconcile             start a reconcile pass now
func adminHandler(token string, store qsync.Store, reconcile func(context.Context) (qsync.ReconcileReport, error), explain func(context.Context, string) (explanation, error), status func(context.Context) (any, error), clock qsync.Clock) http.Handler {
	return withAdminToken(token, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.Trim(strings.TrimPrefix(r.URL.Path, "/admin"), "/")
		parts := strings.Split(path, "/")
		ctx := r.Context()
		switch {
		case path == "deadletters" && r.Method == http.MethodGet:
			dl, err := store.DeadLetters(ctx, 1000)
			respond(w, dl, err)
		case len(parts) >= 2 && parts[0] == "deadletters":
			id, err := strconv.ParseInt(parts[1], 10, 64)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "dead letter id must be a number"})
				return
			}
			switch {
			case len(parts) == 2 && r.Method == http.MethodGet:
				d, found, err := store.DeadLetter(ctx, id)
				if err == nil && !found {
					err = qsync.ErrNotFound
				}
				respond(w, d, err)
			case len(parts) == 2 && r.Method == http.MethodDelete:
				respond(w, map[string]string{"status": "dropped"}, store.DropDeadLetter(ctx, id))
			case len(parts) == 3 && parts[2] == "retry" && r.Method == http.MethodPost:
				respond(w, map[string]string{"status": "requeued"}, store.RetryDeadLetter(ctx, id, clock.Now()))
			default:
				writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
			}
		case path == "status" && r.Method == http.MethodGet:
			v, err := status(ctx)
			respond(w, v, err)
		case path == "explain" && r.Method == http.MethodGet:
			x, err := explain(ctx, r.URL.Query().Get("q"))
			if errors.Is(err, errExplainQuery) {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			respond(w, x, err)
		case path == "events" && r.Method == http.MethodGet:
			st, err := store.EventStatus(ctx)
			respond(w, st, err)
		case path == "reconcile" && r.Method == http.MethodPost:
			rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			defer cancel()
			rep, err := reconcile(rctx)
			respond(w, rep, err)
		default:
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such admin endpoint"})
		}
	}))
}

// withAdminToken serves h only to requests bearing the admin token: without
// a configured token the endpoints do not exist (404); without the right
// bearer credentials the answer is 401, compared in constant time.
func withAdminToken(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			http.NotFound(w, r)
			return
		}
		got, ok := bearer(r.Header.Get("Authorization"))
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// bearer reads an Authorization header's bearer credentials. The scheme
// is case-insensitive (RFC 9110 §11.1), so "bearer x" and "BEARER x" work.
func bearer(h string) (string, bool) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

func respond(w http.ResponseWriter, v any, err error) {
	switch {
	case errors.Is(err, qsync.ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
