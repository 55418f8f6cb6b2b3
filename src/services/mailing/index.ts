export {
  createMailingService,
  MAILING_CONSUMER,
  type MailingOutcome,
  type MailingService,
  type MailingServiceOptions,
  type ParkReason,
} from './service.js';
export { DELIVERY_RECORD_TTL_MS, deliveryRecordsBucket } from './records.js';
