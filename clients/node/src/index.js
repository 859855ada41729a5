// throttle-jobs-client: producer and worker for the throttle_jobs extension.
export { enqueue, enqueueBatch, notifyChannel } from './producer.js';
export { Worker, Snooze, Fail, Retry } from './worker.js';
