package dryrun

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// How issues are kept.
//
// Without a file (New) each issue is held in memory as its JSON. With one
// (Open) an issue's latest state is a JSON value in one of two files, and
// memory holds only its index entry:
//
//   - the snapshot (the state file): {"tracker":…,"next":…,"issues":[…]};
//   - the journal beside it: one line per write since the snapshot, an
//     issue's whole state after the write or its deletion.
//
// A write appends one journal line (encoding the whole set per write made
// a dry-run sync cost O(issues) under the tracker's lock); the journal is
// folded into a new snapshot when it outgrows it, at Open and at Close.
// A write the files refuse keeps the issue in memory for this run, logged.

// entry is what memory holds of an issue.
type entry struct {
	num             int    // the id as a number: issues are listed in id order
	project, marker string // List and Find filter without reading the issue
	mem             []byte // the issue's JSON, when it is not in a file
	inJournal       bool   // else in the snapshot
	off, n          int64  // where the JSON is in that file
}

// stateFile is the persisted form of a tracker's issues.
type stateFile struct {
	Tracker string       `json:"tracker"`
	Next    int          `json:"next"`
	Issues  []savedIssue `json:"issues"`
}

type savedIssue struct {
	qsync.Issue
	Marker   string          `json:"marker,omitempty"`
	Comments []qsync.Comment `json:"comments,omitempty"`
}

// journalRecord is one line of the journal: an issue's whole state after
// a write, or its deletion.
type journalRecord struct {
	Next    int             `json:"next"`
	Issue   json.RawMessage `json:"issue,omitempty"`
	Deleted string          `json:"deleted,omitempty"`
}

// journalPath is where the writes since the snapshot go, one JSON object
// a line (qase-sync.dryrun-jira.json → qase-sync.dryrun-jira.journal.json).
func journalPath(path string) string { return strings.TrimSuffix(path, ".json") + ".journal.json" }

// get reads an issue.
func (t *Tracker) get(e *entry) (*issue, error) {
	b, err := t.raw(e)
	if err != nil {
		return nil, err
	}
	var si savedIssue
	if err := json.Unmarshal(b, &si); err != nil {
		return nil, fmt.Errorf("dry-run tracker %s: issue %d: %w", t.name, e.num, err)
	}
	return &issue{Issue: si.Issue, marker: si.Marker, comments: si.Comments}, nil
}

// raw returns an issue's JSON.
func (t *Tracker) raw(e *entry) ([]byte, error) {
	if e.mem != nil {
		return e.mem, nil
	}
	f, err := t.file(e.inJournal)
	if err != nil {
		return nil, err
	}
	b := make([]byte, e.n)
	if _, err := f.ReadAt(b, e.off); err != nil {
		return nil, fmt.Errorf("dry-run tracker %s: reading issue %d: %w", t.name, e.num, err)
	}
	return b, nil
}

// file returns the open snapshot or journal, opening it if Close closed it.
func (t *Tracker) file(journal bool) (*os.File, error) {
	var err error
	switch {
	case journal && t.journal == nil:
		t.journal, err = os.OpenFile(journalPath(t.path), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	case !journal && t.snap == nil:
		t.snap, err = os.Open(t.path)
	}
	if journal {
		return t.journal, err
	}
	return t.snap, err
}

// put saves is as its issue's latest state: a journal line, or a new
// snapshot when there is none yet or the journal has outgrown it.
func (t *Tracker) put(is *issue) {
	b, err := json.Marshal(savedIssue{Issue: is.Issue, Marker: is.marker, Comments: is.comments})
	if err != nil { // a qsync.Issue always encodes
		panic(err)
	}
	e := t.index(is.Ref.ID, is.Ref.Project, is.marker)
	e.mem = b
	if t.path == "" {
		return
	}
	if t.snapBytes == 0 || t.journalBytes > max(1<<20, 2*t.snapBytes) {
		t.compact()
		return
	}
	prefix := `{"next":` + strconv.Itoa(t.next) + `,"issue":`
	line := make([]byte, 0, len(prefix)+len(b)+2)
	line = append(append(append(line, prefix...), b...), "}\n"...)
	if off, err := t.appendJournal(line); err != nil {
		t.saveFailed(err)
	} else {
		e.mem, e.inJournal, e.off, e.n = nil, true, off+int64(len(prefix)), int64(len(b))
	}
}

// del forgets issue id.
func (t *Tracker) del(id string) {
	delete(t.issues, id)
	if t.path == "" {
		return
	}
	line, _ := json.Marshal(journalRecord{Next: t.next, Deleted: id})
	if _, err := t.appendJournal(append(line, '\n')); err != nil {
		t.saveFailed(err)
	}
}

// index makes or updates the entry of issue id.
func (t *Tracker) index(id, project, marker string) *entry {
	e, ok := t.issues[id]
	if !ok {
		e = &entry{}
		e.num, _ = strconv.Atoi(id)
		t.issues[id] = e
		t.next = max(t.next, e.num)
	}
	p, ok := t.projects[project]
	if !ok {
		p = strings.Clone(project)
		t.projects[p] = p
	}
	e.project, e.marker = p, marker
	return e
}

// appendJournal writes line at the journal's end and returns its offset.
func (t *Tracker) appendJournal(line []byte) (int64, error) {
	if _, err := t.file(true); err != nil {
		return 0, err
	}
	off := t.journalBytes
	n, err := t.journal.Write(line)
	t.journalBytes += int64(n)
	return off, err
}

func (t *Tracker) saveFailed(err error) {
	t.log.WithError(err).Error("dry-run tracker: could not save its issues; they will be forgotten at restart")
}

// loadSnapshot indexes the snapshot's issues (the file may be missing).
func (t *Tracker) loadSnapshot() error {
	f, err := os.Open(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(f))
	err = t.indexSnapshot(dec)
	if err != nil {
		_ = f.Close()
		return err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return err
	}
	t.snap, t.snapBytes = f, st.Size()
	return nil
}

// indexSnapshot reads {"tracker":…,"next":…,"issues":[…]} as a stream,
// noting where each issue's JSON is.
func (t *Tracker) indexSnapshot(dec *json.Decoder) error {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("not a dry-run state file (%v)", err)
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return err
		}
		switch key {
		case "next":
			if err := dec.Decode(&t.next); err != nil {
				return err
			}
		case "issues":
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			if tok == nil { // null
				continue
			}
			if tok != json.Delim('[') {
				return fmt.Errorf("issues: want a list")
			}
			for dec.More() {
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					return err
				}
				e, err := t.indexRaw(raw)
				if err != nil {
					return err
				}
				// The decoder stands right after the value it returned.
				e.off, e.n = dec.InputOffset()-int64(len(raw)), int64(len(raw))
			}
			if _, err := dec.Token(); err != nil {
				return err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
		}
	}
	_, err := dec.Token()
	return err
}

// indexRaw indexes one issue's JSON.
func (t *Tracker) indexRaw(raw []byte) (*entry, error) {
	var si savedIssue
	if err := json.Unmarshal(raw, &si); err != nil {
		return nil, err
	}
	if si.Ref.ID == "" {
		return nil, errors.New("an issue without an id")
	}
	e := t.index(si.Ref.ID, si.Ref.Project, si.Marker)
	e.mem, e.inJournal = nil, false
	return e, nil
}

// replay applies the journal's records; a torn last line (a crash in
// the middle of a write) is ignored, a bad line before it is an error.
// It reports whether the journal held anything, to be folded.
func (t *Tracker) replay() (bool, error) {
	f, err := os.OpenFile(journalPath(t.path), os.O_RDWR|os.O_APPEND, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	t.journal = f
	b, err := io.ReadAll(f)
	if err != nil {
		return false, err
	}
	t.journalBytes = int64(len(b))
	lines := bytes.Split(b, []byte("\n"))
	off := int64(0)
	for i, line := range lines {
		start := off
		off += int64(len(line)) + 1
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec journalRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			if i == len(lines)-1 {
				break
			}
			return false, fmt.Errorf("%s line %d: %w", journalPath(t.path), i+1, err)
		}
		t.next = max(t.next, rec.Next)
		switch {
		case rec.Issue != nil:
			e, err := t.indexRaw(rec.Issue)
			if err != nil {
				return false, fmt.Errorf("%s line %d: %w", journalPath(t.path), i+1, err)
			}
			at := bytes.Index(line, rec.Issue)
			if at < 0 { // not written by put: keep it in memory until folded
				e.mem = rec.Issue
				continue
			}
			e.inJournal, e.off, e.n = true, start+int64(at), int64(len(rec.Issue))
		case rec.Deleted != "":
			delete(t.issues, rec.Deleted)
		}
	}
	return len(b) > 0, nil
}

// compact writes a new snapshot (a temporary file renamed over the old
// one), points the index at it, then empties the journal. A crash between
// the rename and the truncation replays records the snapshot already
// holds, which is harmless. On a failure the old files stay in use.
func (t *Tracker) compact() {
	locs, n, err := t.writeSnapshot()
	var f *os.File
	if err == nil {
		f, err = os.Open(t.path)
	}
	if err != nil {
		t.saveFailed(err)
		return
	}
	if t.snap != nil {
		_ = t.snap.Close()
	}
	t.snap, t.snapBytes = f, n
	for e, loc := range locs {
		e.mem, e.inJournal, e.off, e.n = nil, false, loc[0], loc[1]
	}
	if t.journal != nil {
		err = t.journal.Truncate(0)
	} else if rmErr := os.Remove(journalPath(t.path)); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		err = rmErr
	}
	t.journalBytes = 0
	if err != nil {
		t.saveFailed(err)
	}
}

// writeSnapshot writes the stateFile form one issue at a time through a
// buffer, copying each issue's JSON as it is, and returns where each one
// landed.
func (t *Tracker) writeSnapshot() (map[*entry][2]int64, int64, error) {
	tmp := t.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, 0, err
	}
	w := bufio.NewWriter(f)
	var at int64
	write := func(b []byte) {
		n, _ := w.Write(b) // the error stays in w, reported by Flush
		at += int64(n)
	}
	locs := make(map[*entry][2]int64, len(t.issues))
	head, err := json.Marshal(stateFile{Tracker: t.name, Next: t.next})
	if err == nil {
		// {"tracker":…,"next":…,"issues":null} opened up for the list.
		write(bytes.TrimSuffix(head, []byte("null}")))
		write([]byte("["))
		for i, e := range t.sorted() {
			var b []byte
			if b, err = t.raw(e); err != nil {
				break
			}
			if i > 0 {
				write([]byte(","))
			}
			write([]byte("\n"))
			locs[e] = [2]int64{at, int64(len(b))}
			write(b)
		}
		write([]byte("\n]}\n"))
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, t.path)
	}
	return locs, at, err
}

// Close folds the journal into the snapshot and closes the files. The
// tracker stays usable (a later call opens them again).
func (t *Tracker) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.path == "" {
		return nil
	}
	if t.journalBytes > 0 {
		t.compact()
	}
	return t.closeFiles()
}

func (t *Tracker) closeFiles() error {
	var errs []error
	for _, f := range []**os.File{&t.journal, &t.snap} {
		if *f != nil {
			errs = append(errs, (*f).Close())
			*f = nil
		}
	}
	return errors.Join(errs...)
}
