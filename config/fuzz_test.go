package config

import (
	"os"
	"testing"
)

func FuzzConfigParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/example.yaml"); err == nil {
		f.Add(b)
	}
	if b, err := os.ReadFile("testdata/broken.yaml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"",
		"qase: {allow_unsigned: true}\n",
		"server: [\n",
		"a: &a [*a]\n",
		"qase:\n  secrets: ['${X:-y}', '$${Z}', '${']\n",
		"qase: {allow_unsigned: true}\nnotify:\n  - {name: n, type: slack, url: 'https://h/x', on: [drift, x], per_minute: -1, silent_after: 1s}\n  - {name: n, type: webhook, url_file: /nonexistent}\n",
		"trackers:\n  - {name: j, type: jira}\n  - {name: j, type: github, app: {app_id: x}}\n",
		"mapping:\n  routes:\n    - {name: r, kind: run, tracker: t, project: '{{.vars.x}}', title: '{{', when: '(((a'}\n",
		"mapping:\n  tables: {t: {_default: ~}}\n  routes:\n    - name: r\n      kind: defect\n      tracker: d\n      project: P\n      title: x\n      comments: [{from: entity, body: '{{.comment.body}}', when: 'comment.author in [\"a\"]'}]\ntrackers: [{name: d, type: dryrun}]\nqase: {allow_unsigned: true}\n",
	} {
		f.Add([]byte(s))
	}
	env := envOf(map[string]string{"X": "1", "QASE_WEBHOOK_SECRET": "s"})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data, env)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}
