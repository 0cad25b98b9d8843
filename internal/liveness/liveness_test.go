package liveness

import (
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestCheck(t *testing.T) {
	type step struct {
		do     func(at, sched *Part, c *clock)
		wedged string // "" healthy, else a part's name expected in the error
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"paused parts are not expected to beat", []step{
			{do: func(_, _ *Part, c *clock) { c.advance(time.Hour) }},
		}},
		{"a part beating in time is healthy", []step{
			{do: func(at, s *Part, c *clock) { at.Beat(); s.Beat(); c.advance(29 * time.Second) }},
		}},
		{"a silent part is wedged", []step{
			{do: func(at, s *Part, c *clock) {
				at.Beat()
				s.Beat()
				c.advance(20 * time.Second)
				s.Beat()
				c.advance(20 * time.Second)
			}, wedged: "at"},
		}},
		{"a long step may be silent for its length", []step{
			{do: func(_, s *Part, c *clock) { s.BeatWithin(10 * time.Minute); c.advance(9 * time.Minute) }},
			{do: func(_, _ *Part, c *clock) { c.advance(2 * time.Minute) }, wedged: "sched"},
		}},
		{"stuck is wedged however recent the beat", []step{
			{do: func(at, _ *Part, _ *clock) { at.Beat(); at.Stuck("write blocked") }, wedged: "write blocked"},
			{do: func(at, _ *Part, _ *clock) { at.Beat() }},
		}},
		{"pausing a stuck part clears it", []step{
			{do: func(at, _ *Part, _ *clock) { at.Stuck("write blocked"); at.Pause() }},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Unix(1e9, 0)}
			m := New(c.now)
			at, sched := m.Part("at", 30*time.Second), m.Part("sched", 30*time.Second)
			for i, st := range tc.steps {
				st.do(at, sched, c)
				err := m.Check()
				switch {
				case st.wedged == "" && err != nil:
					t.Errorf("step %d: %v, want healthy", i, err)
				case st.wedged != "" && (err == nil || !strings.Contains(err.Error(), st.wedged)):
					t.Errorf("step %d: %v, want wedged naming %q", i, err, st.wedged)
				}
			}
		})
	}
}
