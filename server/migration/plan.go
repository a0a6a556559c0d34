package migration

// Plan (protocol 2) lists the guest-physical ranges of RAM the source is
// about to send in its first round, so that the target can populate that
// memory in the background, ahead of the pages themselves, instead of
// faulting it in as each frame lands. It is advice: pages outside it may
// still come, and a target may ignore it.
type Plan struct {
	Ranges []PlanRange
}

// PlanRange is Pages pages of RAM from GPA on.
type PlanRange struct {
	GPA, Pages uint64
}

// MaxPlanRanges bounds the ranges of one Plan frame (16 bytes each: 1 MiB).
const MaxPlanRanges = 1 << 16

// MaxPlanFrames bounds the Plan frames of one migration; a source with more
// ranges than they hold leaves the rest out of the plan.
const MaxPlanFrames = 16

// Encode returns the payload: the count (u32), then each range's GPA and
// pages (u64 each).
func (p Plan) Encode() []byte {
	e := enc{b: make([]byte, 0, 4+16*len(p.Ranges))}
	e.u32(uint32(len(p.Ranges)))
	for _, r := range p.Ranges {
		e.u64(r.GPA)
		e.u64(r.Pages)
	}
	return e.b
}

// DecodePlan parses a Plan payload. The ranges must be page aligned, not
// empty, in ascending order and apart (each starts at or after the end of
// the one before), so that a plan has one encoding.
func DecodePlan(p []byte) (Plan, error) {
	d := dec{b: p, msg: TypePlan}
	n := d.count("ranges", 16, MaxPlanRanges)
	plan := Plan{Ranges: make([]PlanRange, 0, n)}
	var end uint64
	for i := 0; i < n && d.err == nil; i++ {
		r := PlanRange{GPA: d.u64("gpa"), Pages: d.u64("pages")}
		switch {
		case d.err != nil:
		case r.GPA%PageSize != 0:
			d.fail("range %d: gpa %#x is not page aligned", i, r.GPA)
		case r.Pages == 0 || r.Pages > 1<<40:
			d.fail("range %d: %d pages", i, r.Pages)
		case r.GPA+r.Pages*PageSize < r.GPA:
			d.fail("range %d: gpa %#x + %d pages overflows", i, r.GPA, r.Pages)
		case i > 0 && r.GPA < end:
			d.fail("range %d at %#x begins before the end of the one before (%#x)", i, r.GPA, end)
		}
		end = r.GPA + r.Pages*PageSize
		plan.Ranges = append(plan.Ranges, r)
	}
	return plan, d.done()
}
