package messaging

import (
	"cmp"
	"container/heap"
	"context"
	"sync"
	"time"
)

// ScheduledMessage is a delayed message of the in-process transport, as it waits to
// be due and then to be handled by a consumer of Role.
type ScheduledMessage struct {
	// ID identifies this scheduling (not the message: the same message may be
	// delayed again later). It is unique and contains none of / \ ? #.
	ID    string
	Role  string
	Topic string
	// Due is when the message goes to Role's consumers.
	Due      time.Time
	UUID     string
	Metadata map[string]string
	Payload  []byte
}

// ScheduleStore keeps the in-process transport's delayed messages across restarts
// of the standalone process. messaging/delaystore implements it on a store.Container.
type ScheduleStore interface {
	// Save stores m durably before it returns.
	Save(ctx context.Context, m ScheduledMessage) error
	// Delete removes a message once a consumer has acked it. Deleting a message that
	// is not there is not an error.
	Delete(ctx context.Context, role, id string) error
	// Pending returns every saved message not deleted yet, in any order.
	Pending(ctx context.Context) ([]ScheduledMessage, error)
}

// scheduler holds the in-process delays: a min-heap by due time and ONE goroutine
// with one timer for the earliest, so a thousand pending delays cost a thousand heap
// entries, not a thousand goroutines or timers. Due messages are handed to deliver,
// which must not block.
type scheduler struct {
	deliver func(ScheduledMessage)

	mu  sync.Mutex
	due dueHeap
	seq uint64

	wake     chan struct{} // capacity 1: the earliest due time may have changed
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func newScheduler(deliver func(ScheduledMessage)) *scheduler {
	s := &scheduler{
		deliver: deliver,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go s.run()
	return s
}

// add schedules m for m.Due. Messages due at the same time go in the order added.
func (s *scheduler) add(m ScheduledMessage) {
	s.mu.Lock()
	s.seq++
	heap.Push(&s.due, scheduled{m: m, seq: s.seq})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// pending is the number of messages not due yet.
func (s *scheduler) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.due)
}

func (s *scheduler) run() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		now := time.Now()
		var ready []ScheduledMessage
		var next time.Time
		s.mu.Lock()
		for len(s.due) > 0 && !s.due[0].m.Due.After(now) {
			ready = append(ready, heap.Pop(&s.due).(scheduled).m)
		}
		if len(s.due) > 0 {
			next = s.due[0].m.Due
		}
		s.mu.Unlock()
		for _, m := range ready {
			s.deliver(m)
		}
		var fire <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next)) // Go 1.23+: Reset leaves no stale tick behind
			fire = timer.C
		}
		select {
		case <-fire:
		case <-s.wake:
			timer.Stop()
		case <-s.stop:
			timer.Stop()
			return
		}
	}
}

// close stops the goroutine; messages not due yet are dropped from memory (they are
// still in the ScheduleStore, if any).
func (s *scheduler) close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

type scheduled struct {
	m   ScheduledMessage
	seq uint64
}

// dueHeap orders by due time, then by the order of scheduling.
type dueHeap []scheduled

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if c := h[i].m.Due.Compare(h[j].m.Due); c != 0 {
		return c < 0
	}
	return cmp.Less(h[i].seq, h[j].seq)
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(scheduled)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = scheduled{}
	*h = old[:len(old)-1]
	return x
}
