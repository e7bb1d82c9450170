package messaging

import "github.com/ThreeDotsLabs/watermill/message"

// Metadata that tells a handler whether a message may have been handled before.
const (
	// metaFirstDelivery is set by the RabbitMQ subscriber, and only there, on a
	// message the broker hands out for the first time (AMQP redelivered flag
	// clear). It never travels: the marshaler drops it on publish, the subscriber
	// sets or removes it on every delivery, and the retry middleware removes it
	// before running a handler again.
	metaFirstDelivery = "_im_first_delivery"
	// MetaMaybeDuplicate marks a message published by a handler run whose own
	// message may have been handled before: the same command may exist twice.
	MetaMaybeDuplicate = "maybeduplicate"
)

// MayBeDuplicate reports whether msg may have been handled before, here or by
// another replica. It is false only when the transport vouches for a first
// delivery (RabbitMQ's redelivered flag is clear), no handler has run on the
// message in this process yet, and its producer did not mark it with
// MarkMaybeDuplicate. The in-process transport cannot tell, so there it is
// always true. A handler may skip its "done already?" read when it is false.
func MayBeDuplicate(msg *message.Message) bool {
	return msg.Metadata.Get(metaFirstDelivery) == "" || msg.Metadata.Get(MetaMaybeDuplicate) != ""
}

// MarkMaybeDuplicate marks out when from may be a duplicate: what a handler
// publishes while handling a message that may have been handled before may
// have been published by that earlier run too.
func MarkMaybeDuplicate(from *message.Message, out ...*message.Message) {
	if !MayBeDuplicate(from) {
		return
	}
	for _, m := range out {
		m.Metadata.Set(MetaMaybeDuplicate, "true")
	}
}
