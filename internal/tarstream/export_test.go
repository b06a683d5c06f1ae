package tarstream

// HandedOver reports whether the stream went to archive/tar.
func (r *Reader) HandedOver() bool { return r.fb != nil }

// ReplayRetained is the size of the buffer the reader keeps for a hand-over.
func (r *Reader) ReplayRetained() int { return cap(r.replay) }

// MaxPAXSize is the largest PAX header data either reader accepts.
const MaxPAXSize = maxPAXSize
