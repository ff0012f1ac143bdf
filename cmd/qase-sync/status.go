package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// The status page: server-rendered HTML (html/template, no front-end
// build, no script) on the admin listener under /admin/ui/, behind the
// admin token. Logging in with the token sets a Secure, HttpOnly,
// SameSite=Strict session cookie signed with a per-process key (a restart
// logs everyone out); every form carries a CSRF token bound to the
// session (the login form a double-submit cookie), checked on every POST.

const (
	uiPrefix        = "/admin/ui/"
	sessionCookie   = "qase_sync_session"
	loginCSRFCookie = "qase_sync_login"
	sessionTTL      = 12 * time.Hour
)

type statusUI struct {
	token   []byte
	key     []byte
	store   qsync.Store
	clock   qsync.Clock
	explain func(context.Context, string) (explanation, error)
	ops     *opsState
	redact  redactor
	log     *logrus.Entry
	tmpl    *template.Template
	// logins bounds token guesses (all clients together): 10 a minute,
	// 5 at once.
	logins *rate.Limiter
}

func newStatusUI(token string, store qsync.Store, clock qsync.Clock, explain func(context.Context, string) (explanation, error), ops *opsState, red redactor, log *logrus.Entry) http.Handler {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	u := &statusUI{token: []byte(token), key: key, store: store, clock: clock, explain: explain, ops: ops, redact: red, log: log,
		tmpl:   template.Must(template.New("ui").Funcs(uiFuncs).Parse(uiTemplates)),
		logins: rate.NewLimiter(rate.Every(6*time.Second), 5)}
	if token == "" {
		return http.NotFoundHandler()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+uiPrefix+"login", u.loginForm)
	mux.HandleFunc("POST "+uiPrefix+"login", u.login)
	mux.HandleFunc("POST "+uiPrefix+"logout", u.authed(u.logout))
	mux.HandleFunc("GET "+uiPrefix+"{$}", u.authed(u.overview))
	mux.HandleFunc("GET "+uiPrefix+"deadletters", u.authed(u.deadLetters))
	mux.HandleFunc("GET "+uiPrefix+"deadletters/{id}", u.authed(u.deadLetter))
	mux.HandleFunc("POST "+uiPrefix+"deadletters/{id}/{action}", u.authed(u.deadLetterAction))
	mux.HandleFunc("GET "+uiPrefix+"explain", u.authed(u.explainPage))
	mux.HandleFunc("POST "+uiPrefix+"explain", u.authed(u.explainSearch))
	return secureHeaders(mux)
}

func secureHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func (u *statusUI) mac(parts ...string) string {
	m := hmac.New(sha256.New, u.key)
	m.Write([]byte(strings.Join(parts, "|")))
	return hex.EncodeToString(m.Sum(nil))
}

// session returns the session cookie's value if it is valid and unexpired.
func (u *statusUI) session(r *http.Request) (string, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", false
	}
	exp, sig, ok := strings.Cut(c.Value, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(u.mac("session", exp))) {
		return "", false
	}
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || u.clock.Now().Unix() > n {
		return "", false
	}
	return c.Value, true
}

func (u *statusUI) csrf(session string) string { return u.mac("csrf", session) }

type ctxSession struct{}

// authed admits requests with a valid session: others are sent to the
// login form (GET) or refused (POST); a POST must carry the CSRF token.
func (u *statusUI) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := u.session(r)
		if !ok {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, uiPrefix+"login", http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(u.csrf(s))) != 1 {
				http.Error(w, "invalid or missing CSRF token; reload the page", http.StatusForbidden)
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxSession{}, s)))
	}
}

func (u *statusUI) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: uiPrefix, MaxAge: maxAge, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode}
}

func (u *statusUI) loginForm(w http.ResponseWriter, r *http.Request) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	http.SetCookie(w, u.cookie(loginCSRFCookie, tok, 600))
	u.render(w, r, http.StatusOK, "login", map[string]any{"LoginCSRF": tok, "Failed": r.URL.Query().Has("failed")})
}

func (u *statusUI) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	c, err := r.Cookie(loginCSRFCookie)
	form := r.PostFormValue("csrf")
	if err != nil || form == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(form)) != 1 {
		http.Error(w, "invalid or missing CSRF token; reload the login page", http.StatusForbidden)
		return
	}
	if !u.logins.AllowN(u.clock.Now(), 1) {
		w.Header().Set("Retry-After", "10")
		http.Error(w, "too many login attempts; wait a little", http.StatusTooManyRequests)
		return
	}
	got := sha256.Sum256([]byte(r.PostFormValue("token")))
	want := sha256.Sum256(u.token)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		u.log.WithField("remote", r.RemoteAddr).Warn("status page: failed login")
		http.Redirect(w, r, uiPrefix+"login?failed", http.StatusSeeOther)
		return
	}
	exp := strconv.FormatInt(u.clock.Now().Add(sessionTTL).Unix(), 10)
	http.SetCookie(w, u.cookie(sessionCookie, exp+"."+u.mac("session", exp), int(sessionTTL.Seconds())))
	http.SetCookie(w, u.cookie(loginCSRFCookie, "", -1))
	http.Redirect(w, r, uiPrefix, http.StatusSeeOther)
}

func (u *statusUI) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, u.cookie(sessionCookie, "", -1))
	http.Redirect(w, r, uiPrefix+"login", http.StatusSeeOther)
}

// render executes a page; data gets the CSRF token and the flash message.
func (u *statusUI) render(w http.ResponseWriter, r *http.Request, status int, page string, data map[string]any) {
	if s, ok := r.Context().Value(ctxSession{}).(string); ok {
		data["CSRF"] = u.csrf(s)
		data["LoggedIn"] = true
	}
	data["Page"] = page
	data["Flash"] = r.URL.Query().Get("done")
	data["Now"] = u.clock.Now()
	var b strings.Builder
	if err := u.tmpl.ExecuteTemplate(&b, page, data); err != nil {
		u.log.WithError(err).Error("status page: template")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

func (u *statusUI) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, qsync.ErrNotFound) {
		status = http.StatusNotFound
	} else if errors.Is(err, errExplainQuery) {
		status = http.StatusBadRequest
	}
	u.render(w, r, status, "error", map[string]any{"Error": u.redact.String(err.Error())})
}

type projectDelivery struct {
	Project string
	At      time.Time
}

func (u *statusUI) overview(w http.ResponseWriter, r *http.Request) {
	now := u.clock.Now()
	o, err := u.store.Overview(r.Context(), now.Add(-time.Hour))
	if err != nil {
		u.fail(w, r, err)
		return
	}
	var last []projectDelivery
	for p, at := range o.LastDelivery {
		last = append(last, projectDelivery{p, at})
	}
	sort.Slice(last, func(i, j int) bool { return last[i].At.After(last[j].At) })
	total := 0
	for _, n := range o.Outcomes {
		total += n
	}
	u.render(w, r, http.StatusOK, "overview", map[string]any{
		"O": o, "LastDelivery": last, "Throughput": total, "Reconcile": u.ops.lastReconcile(),
		"Applied": o.Outcomes[qsync.OutcomeApplied], "Noop": o.Outcomes[qsync.OutcomeNoop], "Dead": o.Outcomes[qsync.OutcomeDead],
	})
}

func (u *statusUI) deadLetters(w http.ResponseWriter, r *http.Request) {
	dls, err := u.store.DeadLetters(r.Context(), 500)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	for i := range dls {
		dls[i].Reason = u.redact.String(dls[i].Reason)
		dls[i].LastRequest = u.redact.String(dls[i].LastRequest)
	}
	u.render(w, r, http.StatusOK, "deadletters", map[string]any{"DeadLetters": dls})
}

func (u *statusUI) deadLetter(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		u.fail(w, r, fmt.Errorf("dead letter id %q: %w", r.PathValue("id"), qsync.ErrNotFound))
		return
	}
	d, found, err := u.store.DeadLetter(r.Context(), id)
	if err == nil && !found {
		err = fmt.Errorf("dead letter %d: %w", id, qsync.ErrNotFound)
	}
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d.Reason, d.LastRequest = u.redact.String(d.Reason), u.redact.String(d.LastRequest)
	u.render(w, r, http.StatusOK, "deadletter", map[string]any{"D": d, "Entity": d.Key.EntityRef.String()})
}

func (u *statusUI) deadLetterAction(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		u.fail(w, r, fmt.Errorf("dead letter id %q: %w", r.PathValue("id"), qsync.ErrNotFound))
		return
	}
	var done string
	switch r.PathValue("action") {
	case "retry":
		err, done = u.store.RetryDeadLetter(r.Context(), id, u.clock.Now()), fmt.Sprintf("dead letter %d requeued; the workers will sync it", id)
	case "drop":
		err, done = u.store.DropDeadLetter(r.Context(), id), fmt.Sprintf("dead letter %d dropped", id)
	default:
		err = fmt.Errorf("no action %q: %w", r.PathValue("action"), qsync.ErrNotFound)
	}
	if err != nil {
		u.fail(w, r, err)
		return
	}
	u.log.WithFields(logrus.Fields{"dead_letter": id, "action": r.PathValue("action")}).Info("status page: dead letter")
	http.Redirect(w, r, uiPrefix+"deadletters?done="+url.QueryEscape(done), http.StatusSeeOther)
}

func (u *statusUI) explainSearch(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, uiPrefix+"explain?q="+url.QueryEscape(strings.TrimSpace(r.PostFormValue("q"))), http.StatusSeeOther)
}

func (u *statusUI) explainPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	data := map[string]any{"Q": q}
	if q != "" {
		x, err := u.explain(r.Context(), q)
		if err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, qsync.ErrNotFound) {
				status = http.StatusNotFound
			} else if errors.Is(err, errExplainQuery) {
				status = http.StatusBadRequest
			}
			data["Error"] = u.redact.String(err.Error())
			u.render(w, r, status, "explain", data)
			return
		}
		for i := range x.Keys {
			for j := range x.Keys[i].Syncs {
				ch := &x.Keys[i].Syncs[j]
				ch.Detail, ch.FailedRequest = u.redact.String(ch.Detail), u.redact.String(ch.FailedRequest)
			}
		}
		data["X"] = x
	}
	u.render(w, r, http.StatusOK, "explain", data)
}

var uiFuncs = template.FuncMap{
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := now.Sub(t).Round(time.Second)
		if d < 0 {
			d = 0
		}
		return d.String() + " ago"
	},
	"ts":       func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"explainq": func(s string) string { return uiPrefix + "explain?q=" + url.QueryEscape(s) },
	"short":    short,
	"dict":     func(id int64, csrf any) map[string]any { return map[string]any{"ID": id, "CSRF": csrf} },
}

const uiTemplates = `
{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qase-sync · {{.Page}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header strong{margin-right:1em}
header form{margin-left:auto}main{padding:1em 1.2em;max-width:1100px}
table{border-collapse:collapse;background:#fff;width:100%}td,th{border:1px solid #dde1e7;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#eef1f5}.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{background:#fff;border:1px solid #dde1e7;padding:.7em 1em;min-width:10em}
.card b{display:block;font-size:1.5em}.flash{background:#e5f6e8;border:1px solid #9bd3a6;padding:.5em .8em}
.err{background:#fde8e8;border:1px solid #f0a8a8;padding:.5em .8em}code,pre{font:12px ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}
button{cursor:pointer}form.inline{display:inline}.ops li{margin:.2em 0}.muted{color:#667}
</style></head><body>
<header><strong>qase-sync</strong>{{if .LoggedIn}}
<a href="/admin/ui/">Overview</a><a href="/admin/ui/deadletters">Dead letters</a><a href="/admin/ui/explain">Explain</a>
<form method="post" action="/admin/ui/logout"><input type="hidden" name="csrf" value="{{.CSRF}}"><button type="submit">Log out</button></form>{{end}}
</header><main>{{if .Flash}}<p class="flash" role="status">{{.Flash}}</p>{{end}}{{end}}

{{define "foot"}}</main></body></html>{{end}}

{{define "login"}}{{template "head" .}}
<h1>Log in</h1>
{{if .Failed}}<p class="err">That is not the admin token.</p>{{end}}
<form method="post" action="/admin/ui/login">
<input type="hidden" name="csrf" value="{{.LoginCSRF}}">
<label>Admin token (server.admin_token) <input type="password" name="token" autocomplete="current-password" autofocus required></label>
<button type="submit">Log in</button>
</form>
{{template "foot" .}}{{end}}

{{define "error"}}{{template "head" .}}<p class="err">{{.Error}}</p>{{template "foot" .}}{{end}}

{{define "overview"}}{{template "head" .}}
<h1>Overview</h1>
<div class="cards">
<div class="card" id="queue-depth">Queue depth<b>{{.O.QueueDepth}}</b></div>
<div class="card" id="oldest-pending">Oldest pending job<b>{{if .O.OldestPending.IsZero}}none{{else}}{{ago .Now .O.OldestPending}}{{end}}</b></div>
<div class="card" id="throughput">Syncs, last hour<b>{{.Throughput}}</b>
<span class="muted">applied {{.Applied}} · no-op {{.Noop}} · dead {{.Dead}}</span></div>
<div class="card" id="dead-letters">Dead letters<b><a href="/admin/ui/deadletters">{{.O.DeadLetters}}</a></b></div>
</div>
<h2>Last delivery per Qase project</h2>
{{if .LastDelivery}}<table id="last-delivery"><tr><th>Project</th><th>Last delivery</th><th></th></tr>
{{range .LastDelivery}}<tr><td>{{.Project}}</td><td>{{ts .At}}</td><td>{{ago $.Now .At}}</td></tr>{{end}}</table>
{{else}}<p class="muted">No delivery yet.</p>{{end}}
<h2>Last reconcile</h2>
{{with .Reconcile}}<table id="reconcile"><tr><th>Started</th><td>{{ts .At}} ({{ago $.Now .At}}){{if not .Finished}} — running{{end}}</td></tr>
<tr><th>Checked</th><td>{{.Report.Checked}} keys, {{.Report.Enqueued}} enqueued, {{.Report.Duplicates}} duplicates, {{.Report.Failed}} failed</td></tr>
<tr><th>Mode</th><td>{{.Report.Mode}}: {{.Report.Unchanged}} keys in sync, no job{{with .Report.FullOnly}}; left to full sweeps: {{range .}}{{.}} {{end}}{{end}}</td></tr>
<tr><th>Drift found since</th><td>{{range $c, $n := .Drift}}{{$c}}: {{$n}} {{else}}none{{end}}</td></tr>
{{if .Err}}<tr><th>Error</th><td>{{.Err}}</td></tr>{{end}}</table>
{{else}}<p class="muted">No reconcile pass has run in this process yet.</p>{{end}}
{{template "foot" .}}{{end}}

{{define "dlforms"}}<form class="inline" method="post" action="/admin/ui/deadletters/{{.ID}}/retry"><input type="hidden" name="csrf" value="{{.CSRF}}"><button type="submit" name="retry">Retry</button></form>
<form class="inline" method="post" action="/admin/ui/deadletters/{{.ID}}/drop"><input type="hidden" name="csrf" value="{{.CSRF}}"><button type="submit" name="drop">Drop</button></form>{{end}}

{{define "deadletters"}}{{template "head" .}}
<h1>Dead letters</h1>
{{if .DeadLetters}}<table id="dead-letter-list"><tr><th>ID</th><th>Key</th><th>Attempts</th><th>Since</th><th>Reason</th><th></th></tr>
{{range .DeadLetters}}<tr data-id="{{.ID}}"><td><a href="/admin/ui/deadletters/{{.ID}}">{{.ID}}</a></td><td><a href="{{explainq .Key.EntityRef.String}}">{{.Key}}</a></td>
<td>{{.Attempts}}</td><td>{{ts .CreatedAt}}</td><td>{{.Reason}}</td>
<td>{{template "dlforms" (dict .ID $.CSRF)}}</td></tr>{{end}}</table>
{{else}}<p id="no-dead-letters">No dead letters.</p>{{end}}
{{template "foot" .}}{{end}}

{{define "deadletter"}}{{template "head" .}}
<h1>Dead letter {{.D.ID}}</h1>
<table id="dead-letter"><tr><th>Key</th><td>{{.D.Key}}</td></tr>
<tr><th>Attempts</th><td>{{.D.Attempts}}</td></tr><tr><th>Since</th><td>{{ts .D.CreatedAt}}</td></tr>
<tr><th>Reason</th><td><pre>{{.D.Reason}}</pre></td></tr>
<tr><th>Failed request</th><td><pre>{{if .D.LastRequest}}{{.D.LastRequest}}{{else}}(none recorded){{end}}</pre></td></tr></table>
<p>{{template "dlforms" (dict .D.ID .CSRF)}} <a href="{{explainq .Entity}}">Provenance of {{.Entity}}</a></p>
{{template "foot" .}}{{end}}

{{define "explain"}}{{template "head" .}}
<h1>Explain</h1>
<form method="post" action="/admin/ui/explain"><input type="hidden" name="csrf" value="{{.CSRF}}">
<label>Issue key or PROJECT/KIND/ID <input name="q" value="{{.Q}}" placeholder="QA-1 or ID/defect/1" required></label> <button type="submit">Explain</button></form>
{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
{{with .X}}{{range .Keys}}<section class="key">
<h2>{{if .Issue}}{{.Issue.Key}}{{else}}no issue{{end}} ← route {{.Route}}, Qase {{.Entity}}</h2>
<p class="muted">tracker {{.Tracker}} ({{.TrackerType}}{{if .DryRun}}, dry run{{end}}){{if .LinkState}} · link {{.LinkState}}{{end}}{{if .Issue}}{{if .Issue.URL}} · {{.Issue.URL}}{{end}}{{end}}</p>
{{if .Pending}}<p>Pending: {{range .Pending}}#{{.Seq}} {{.Name}} {{end}}</p>{{end}}
<table class="syncs"><tr><th>Sync</th><th>Tracker changes (rule → request)</th><th>Caused by</th></tr>
{{range .Syncs}}<tr><td>{{ts .At}}<br><b>{{.Outcome}}</b></td><td>{{if .Ops}}<ul class="ops">{{range .Ops}}<li><code>{{.Op}}</code><br><span class="muted">{{.Rule}}</span><br><code>{{.Request}}</code></li>{{end}}</ul>{{else}}<span class="muted">no tracker change</span>{{end}}
{{if .Detail}}<p>{{.Detail}}</p>{{end}}{{if .FailedRequest}}<p>failed request: <code>{{.FailedRequest}}</code></p>{{end}}</td>
<td>{{range .Events}}#{{.Seq}} <b>{{.Name}}</b><br><span class="muted">in Qase {{ts .Timestamp}}, received {{ts .ReceivedAt}}, dedup {{short .Dedup}}</span><br>{{else}}{{.Cause}}{{end}}</td></tr>{{end}}
</table></section>{{end}}{{end}}
{{template "foot" .}}{{end}}
`
