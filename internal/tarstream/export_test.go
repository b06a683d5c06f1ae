package tarstream

// HandedOver reports whether the stream went to archive/tar.
func (r *Reader) HandedOver() bool { return r.fb != nil }
