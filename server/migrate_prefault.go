package server

import (
	"fmt"
	"sync"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/vmm"
)

// prefaultChunk is how much RAM a prefaulter populates between looks at
// its stop: ending it waits for one chunk at most.
const prefaultChunk = 64 << 20

// prefaulter populates the memory a source's Plan names (protocol 2) in the
// background, while the pages stream in: a target that first writes a page
// then finds it present instead of faulting it in under the stream. On a
// virtualized host, fresh memory is dear and the difference large.
type prefaulter struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

// start populates ranges of m's RAM in a goroutine of its own.
func (p *prefaulter) start(m VM, ranges []migration.PlanRange) {
	if p.stop == nil {
		p.stop = make(chan struct{})
	}
	stop := p.stop
	p.wg.Go(func() {
		for _, r := range ranges {
			for gpa, end := r.GPA, r.GPA+r.Pages*vmm.PageSize; gpa < end; gpa += prefaultChunk {
				select {
				case <-stop:
					return
				default:
				}
				if m.PrefaultGuest(gpa, int(min(prefaultChunk, end-gpa))) != nil {
					return // best effort: the pages fault in as they land
				}
			}
		}
	})
}

// end stops populating and waits for it to stop (one chunk's populate at
// most); ending twice is ending once.
func (p *prefaulter) end() {
	if p.stop != nil {
		close(p.stop)
		p.stop = nil
	}
	p.wg.Wait()
}

// takePlan checks a Plan frame and starts populating what it names: only
// in protocol 2, before any page came, in at most MaxPlanFrames frames and
// within the guest's RAM.
func (t *target) takePlan(payload []byte, regions []vmm.Region, begun bool) error {
	switch {
	case t.p.protocol < migration.ProtocolV2:
		return fmt.Errorf("%w: a Plan in protocol %d", migration.ErrFrame, t.p.protocol)
	case begun:
		return fmt.Errorf("%w: a Plan after the first round began", migration.ErrFrame)
	case t.plans >= migration.MaxPlanFrames:
		return fmt.Errorf("%w: more than %d Plan frames", migration.ErrFrame, migration.MaxPlanFrames)
	}
	t.plans++
	plan, err := migration.DecodePlan(payload)
	if err != nil {
		return err
	}
	var pages uint64
	for _, r := range plan.Ranges {
		if err := checkRange(regions, r.GPA, r.Pages*migration.PageSize); err != nil {
			return fmt.Errorf("the plan: %w", err)
		}
		pages += r.Pages
	}
	t.r.log.Debug("migration plan", "migration", t.id, "ranges", len(plan.Ranges), "pages", pages)
	t.prefault.start(t.m, plan.Ranges)
	return nil
}
