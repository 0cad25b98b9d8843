package station

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/provisiond/provisiond/internal/control"
)

// QueryTimeout is how long an instance has to answer before it is shown as not answering.
const QueryTimeout = time.Second

// Result is one instance's answer to a query, or why there is none.
type Result[T any] struct {
	Instance Instance
	Value    T
	Err      error
}

// Query asks every instance at once, each under its own timeout, and returns the results in
// the order of instances once all have answered or timed out.
func Query[T any](ctx context.Context, instances []Instance, timeout time.Duration,
	ask func(ctx context.Context, in Instance) (T, error)) []Result[T] {
	out := make([]Result[T], len(instances))
	var wg sync.WaitGroup
	for i, in := range instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			qctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			v, err := ask(qctx, in)
			out[i] = Result[T]{Instance: in, Value: v, Err: err}
		}()
	}
	wg.Wait()
	return out
}

// Unreachable reports whether err means the instance itself could not be asked (gone, or no
// answer in time), as opposed to an instance that answered with an error.
func Unreachable(err error) bool {
	var de *control.DialError
	return errors.As(err, &de) || errors.Is(err, context.DeadlineExceeded)
}

// Describe says in a few words why an instance gave no answer.
func Describe(err error, timeout time.Duration) string {
	var de *control.DialError
	switch {
	case errors.Is(err, control.ErrNotRunning):
		return "gone: nothing listens on its socket"
	case errors.As(err, &de):
		return "unreachable: " + de.Err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer within " + timeout.String()
	}
	return err.Error()
}
